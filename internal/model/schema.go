package model

import "fmt"

// SchemaError reports stored data of a format newer than this build
// reads: a newer agent wrote it (during an upgrade, or before a
// downgrade). What names the data (a key, "manager state").
type SchemaError struct {
	What       string
	Have, Know int
}

func (e *SchemaError) Error() string {
	return fmt.Sprintf("%s has schema version %d, newer than this agent reads (up to %d): it was written by a newer Haven; upgrade this host's haven", e.What, e.Have, e.Know)
}
