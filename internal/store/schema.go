package store

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/haven-ha/haven/internal/model"
)

// Schema versions of the stored records.
//
// Every JSON record Haven keeps carries the version of its format as the
// first member of its object, "schema": N, per key family (Families; the
// manager's saved state has versions of its own, package savedstate and
// manager.StateSchema). Records written before versions existed (by the
// releases up to commit 235b719) have none: version 0, which reads exactly
// like version 1 (version 1 only added the member). A build reads every
// version up to its family's Schema; a record of a newer version (a newer
// agent wrote it: a downgrade, or an upgrade in progress) is refused with a
// *model.SchemaError that names the key, never dropped or overwritten:
// readers fail with it (a manager resigns), and writers that replace such a
// record read it first (CheckSchema). When a version changes a record's
// layout, Decode converts the older versions it reads.

// Family is a group of keys holding records of one type.
type Family struct {
	// Prefix is the family's key prefix, or its one key.
	Prefix string
	// Name says what the records are, for errors and the docs.
	Name string
	// Schema is the version this build writes and the newest it reads; 0
	// for a family whose values are not JSON records (a PEM, a timestamp, a
	// node name): those carry no version.
	Schema int
}

// Families lists every key family (keys.go) with its schema version.
// TestEveryKeyHasAFamily keeps it complete.
var Families = []Family{
	{KeyClusterConfig, "cluster configuration", 1},
	{KeyManagerInfo, "manager record", 1},
	{KeyElection, "manager election key (node name)", 0},
	{KeyCACert, "cluster CA certificate (PEM)", 0},
	{KeyCAKey, "cluster CA key (PEM)", 0},
	{PrefixNodeReg, "node registration", 1},
	{PrefixNodeLive, "node facts", 1},
	{PrefixNodeState, "node state", 1},
	{PrefixNodeLevel, "node feature level", 1},
	{PrefixTokens, "token", 1},
	{PrefixRevoked, "certificate revocation", 1},
	{PrefixKeyring, "cluster secret key grant", 1},
	{PrefixKeyRequests, "cluster secret key request (PEM)", 0},
	{KeyHeartbeat, "heartbeat key (hex)", 0},
	{KeyCARotation, "CA rotation", 1},
	{PrefixCARotationAcks, "CA rotation acknowledgement", 1},
	{KeyCARestart, "CA rotation restart turn (node name)", 0},
	{KeyCANextKey, "next CA key (PEM)", 0},
	{PrefixUsers, "web UI user", 1},
	{PrefixSessions, "web UI session", 1},
	{KeyPolicy, "cluster policy", 1},
	{PrefixGuests, "guest", 1},
	{PrefixDomains, "failover domain", 1},
	{KeyFenceConfig, "fence configuration", 1},
	{KeyNotify, "notification configuration", 1},
	{PrefixPools, "storage pool", 1},
	{PrefixPoolHealth, "pool check", 1},
	{PrefixCommands, "operator command", 1},
	{PrefixOrders, "manager order", 1},
	{PrefixReports, "guest report", 1},
	{PrefixShutdown, "graceful shutdown", 1},
	{PrefixShutdownReady, "shutdown answer (timestamp)", 0},
	{PrefixEvents, "event", 1},
	{PrefixIncidents, "incident", 1},
	// Versioned by package savedstate (format) and manager.StateSchema.
	{PrefixManager, "manager state", 0},
}

// FamilyOf is the family of key (the longest matching prefix).
func FamilyOf(key string) (Family, bool) {
	var best Family
	found := false
	for _, f := range Families {
		if strings.HasPrefix(key, f.Prefix) && (!found || len(f.Prefix) > len(best.Prefix)) {
			best, found = f, true
		}
	}
	return best, found
}

// schemaOf is the version a family's records are written with; it panics
// on a key outside every family or of a family without versions: a
// programming error (add the family, or do not encode its values as
// records).
func schemaOf(key string) int {
	f, ok := FamilyOf(key)
	if !ok || f.Schema == 0 {
		panic(fmt.Sprintf("store: %s is no key of a versioned record family (store.Families)", key))
	}
	return f.Schema
}

// Encode is v's JSON for key, with its family's version as the first
// member. v must encode as a JSON object.
func Encode(key string, v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", key, err)
	}
	if len(b) < 2 || b[0] != '{' {
		return nil, fmt.Errorf("encode %s: %T is not a JSON object", key, v)
	}
	head := `{"schema":` + strconv.Itoa(schemaOf(key))
	if len(b) == 2 {
		return []byte(head + "}"), nil
	}
	return append([]byte(head+","), b[1:]...), nil
}

// MustEncode is Encode as a string for a put; it panics when v cannot be
// encoded, which only a programming error causes (our own plain structs).
func MustEncode(key string, v any) string {
	b, err := Encode(key, v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// Schema is the version of a stored record: its "schema" member, 0 when it
// has none (written before versions).
func Schema(data []byte) (int, error) {
	const head = `{"schema":`
	if rest, ok := bytes.CutPrefix(data, []byte(head)); ok {
		// Written by Encode: the version comes first.
		end := bytes.IndexAny(rest, ",}")
		if end > 0 {
			if n, err := strconv.Atoi(string(bytes.TrimSpace(rest[:end]))); err == nil {
				return n, nil
			}
		}
	}
	var v struct {
		Schema int `json:"schema"`
	}
	if err := json.Unmarshal(data, &v); err != nil {
		return 0, err
	}
	return v.Schema, nil
}

// Decode reads the record stored at key into v: a *model.SchemaError when
// its version is newer than this build reads.
func Decode(key string, data []byte, v any) error {
	if err := CheckSchema(key, data); err != nil {
		return err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("decode %s: %w", key, err)
	}
	return nil
}

// CheckSchema refuses a record of key newer than this build reads (a
// *model.SchemaError); a writer calls it before it replaces a record it has
// not decoded. Values of families without versions pass.
func CheckSchema(key string, data []byte) error {
	f, _ := FamilyOf(key)
	if f.Schema == 0 {
		return nil
	}
	have, err := Schema(data)
	if err != nil {
		return fmt.Errorf("decode %s: %w", key, err)
	}
	if know := f.Schema; have > know {
		return &model.SchemaError{What: f.Name + " " + key, Have: have, Know: know}
	}
	return nil
}
