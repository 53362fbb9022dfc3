package cli

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/haven-ha/haven/internal/api"
)

// TestUserCLI adds, lists, changes and removes web UI users against a real
// agent, and checks that the password works for a login.
func TestUserCLI(t *testing.T) {
	ag, ctx := startAgent(t)

	tests := []struct {
		name     string
		role     string
		stdin    string
		args     []string
		code     int
		out, err string
	}{
		{"add", "admin", "s3cret-pass\n", []string{"user", "add", "alice", "--role", "operator", "--password-stdin"}, 0, `User "alice" added with role operator`, ""},
		{"add flags first", "admin", "other-pass\n", []string{"user", "add", "--role", "viewer", "--password-stdin", "bob"}, 0, `"bob"`, ""},
		{"duplicate", "admin", "s3cret-pass\n", []string{"user", "add", "alice", "--role", "viewer", "--password-stdin"}, 1, "", "already exists"},
		{"short password", "admin", "short\n", []string{"user", "add", "carol", "--role", "viewer", "--password-stdin"}, 1, "", "too short"},
		{"no password", "admin", "", []string{"user", "add", "carol", "--role", "viewer", "--password-stdin"}, 1, "", "no password on stdin"},
		{"not a terminal", "admin", "", []string{"user", "add", "carol", "--role", "viewer"}, 1, "", "--password-stdin"},
		{"no role", "admin", "s3cret-pass\n", []string{"user", "add", "carol", "--password-stdin"}, 2, "", "--role is required"},
		{"operator may not", "operator", "s3cret-pass\n", []string{"user", "add", "carol", "--role", "viewer", "--password-stdin"}, 1, "", "needs \"admin\""},
		{"set role", "admin", "", []string{"user", "set", "bob", "--role", "operator"}, 0, "role operator", ""},
		{"set nothing", "admin", "", []string{"user", "set", "bob"}, 2, "", "nothing to change"},
		{"list", "admin", "", []string{"user", "list"}, 0, "alice", ""},
		{"remove", "admin", "", []string{"user", "remove", "bob"}, 0, "", ""},
		{"remove again", "admin", "", []string{"user", "remove", "bob"}, 1, "", "no user named"},
	}
	for _, tc := range tests {
		code, out, errs := cliRun(ctx, ag, tc.role, tc.stdin, tc.args...)
		if code != tc.code || !strings.Contains(out, tc.out) || !strings.Contains(errs, tc.err) {
			t.Errorf("%s: haven %s: exit %d, stdout %q, stderr %q; want exit %d, stdout with %q, stderr with %q",
				tc.name, strings.Join(tc.args, " "), code, out, errs, tc.code, tc.out, tc.err)
		}
	}
	code, out, _ := cliRun(ctx, ag, "admin", "", "user", "list", "-o", "json")
	var us []api.UserInfo
	if code != 0 || json.Unmarshal([]byte(out), &us) != nil || len(us) != 1 || us[0].Name != "alice" || us[0].Role != api.RoleOperator {
		t.Fatalf("user list -o json: exit %d, %s", code, out)
	}
	// The password set by the CLI opens a session.
	var me api.Whoami
	if err := ag.Clients["none"].Do(ctx, "POST", "/api/v1/login", api.LoginRequest{User: "alice", Password: "s3cret-pass"}, &me); err != nil || me.Role != api.RoleOperator {
		t.Fatalf("login as alice: %+v %v", me, err)
	}
}
