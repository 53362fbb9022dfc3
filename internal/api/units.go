package api

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/haven-ha/haven/internal/model"
)

// Size is a guest's memory in bytes. In JSON it is a number of bytes or a
// string with a unit: "512MiB", "2GiB", "1G" (units are powers of 1024;
// a bare string number is bytes).
type Size int64

// ParseSize reads a size such as "512MiB", "2G" or "1073741824".
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := len(t)
	for i > 0 && (t[i-1] < '0' || t[i-1] > '9') {
		i--
	}
	num, unit := strings.TrimSpace(t[:i]), strings.ToLower(strings.TrimSpace(t[i:]))
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("size %q: want a number of bytes or a number with a unit such as 512MiB or 2GiB", s)
	}
	var mul int64
	switch strings.TrimSuffix(strings.TrimSuffix(unit, "b"), "i") {
	case "":
		mul = 1
	case "k":
		mul = model.KiB
	case "m":
		mul = model.MiB
	case "g":
		mul = model.GiB
	case "t":
		mul = model.TiB
	default:
		return 0, fmt.Errorf("size %q: unknown unit %q; use KiB, MiB, GiB or TiB", s, unit)
	}
	if unit == "b" || unit == "ib" {
		mul = 1
	}
	if n > math.MaxInt64/mul {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return n * mul, nil
}

// FormatSize writes a size with the largest binary unit that divides it.
func FormatSize(n int64) string {
	for _, u := range []struct {
		v int64
		s string
	}{{model.TiB, "TiB"}, {model.GiB, "GiB"}, {model.MiB, "MiB"}, {model.KiB, "KiB"}} {
		if n != 0 && n%u.v == 0 {
			return strconv.FormatInt(n/u.v, 10) + u.s
		}
	}
	return strconv.FormatInt(n, 10)
}

// UnmarshalJSON accepts a number of bytes or a string with a unit.
func (s *Size) UnmarshalJSON(b []byte) error {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return &fieldDecodeError{field: "memory", msg: "memory must be a number of bytes or a string such as \"512MiB\""}
	}
	switch x := v.(type) {
	case float64:
		if x < 0 || x != math.Trunc(x) {
			return &fieldDecodeError{field: "memory", msg: fmt.Sprintf("memory %v is not a whole number of bytes", x)}
		}
		// float64(MaxInt64) is 2^63, which does not fit: compare with >=.
		if x >= math.MaxInt64 {
			return &fieldDecodeError{field: "memory", msg: fmt.Sprintf("memory %v bytes is above the maximum of 16 TiB", x)}
		}
		*s = Size(x)
	case string:
		n, err := ParseSize(x)
		if err != nil {
			return &fieldDecodeError{field: "memory", msg: "memory: " + err.Error()}
		}
		*s = Size(n)
	default:
		return &fieldDecodeError{field: "memory", msg: "memory must be a number of bytes or a string such as \"512MiB\""}
	}
	return nil
}

// Duration is a span of time. In JSON it is a Go duration string ("10m",
// "1h30m") or a number of seconds; it is written as a string.
type Duration time.Duration

// MarshalJSON writes the duration as a string such as "10m0s".
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON accepts "10m" or a number of seconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return &fieldDecodeError{field: "restart_window", msg: "restart_window must be a duration such as \"10m\" or a number of seconds"}
	}
	switch x := v.(type) {
	case float64:
		if x < 0 || x > float64(math.MaxInt64/int64(time.Second)) {
			return &fieldDecodeError{field: "restart_window", msg: fmt.Sprintf("restart_window %v seconds is out of range", x)}
		}
		*d = Duration(x * float64(time.Second))
	case string:
		t, err := time.ParseDuration(x)
		if err != nil || t < 0 {
			return &fieldDecodeError{field: "restart_window", msg: fmt.Sprintf("restart_window %q is not a duration such as \"10m\"", x)}
		}
		*d = Duration(t)
	default:
		return &fieldDecodeError{field: "restart_window", msg: "restart_window must be a duration such as \"10m\" or a number of seconds"}
	}
	return nil
}
