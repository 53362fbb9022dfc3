package store

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

func TestSlogZapLevelsAndFields(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	z := slogZap(log, zapcore.WarnLevel, "etcd").With(zap.String("member", "h1"))
	z.Info("chatty")
	z.Warn("slow fdatasync", zap.Duration("took", 1500000000))
	out := buf.String()
	if strings.Contains(out, "chatty") {
		t.Errorf("info passed a warn filter: %s", out)
	}
	for _, want := range []string{`"level":"WARN"`, `"msg":"slow fdatasync"`, `"component":"etcd"`, `"member":"h1"`, `"took"`} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %s: %s", want, out)
		}
	}
}
