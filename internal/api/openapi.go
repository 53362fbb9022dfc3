package api

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"

	"gopkg.in/yaml.v3"
)

// openAPIYAML is the OpenAPI 3 document of the whole API, written by hand
// next to the handlers it describes.
//
//go:embed openapi.yaml
var openAPIYAML []byte

var (
	openAPIOnce sync.Once
	openAPIJSON []byte
	openAPIErr  error
)

// OpenAPIJSON returns the OpenAPI document as JSON.
func OpenAPIJSON() ([]byte, error) {
	openAPIOnce.Do(func() {
		var doc any
		if err := yaml.Unmarshal(openAPIYAML, &doc); err != nil {
			openAPIErr = fmt.Errorf("parse openapi.yaml: %w", err)
			return
		}
		openAPIJSON, openAPIErr = json.MarshalIndent(doc, "", "  ")
		if openAPIErr != nil {
			openAPIErr = fmt.Errorf("encode the OpenAPI document: %w", openAPIErr)
		}
	})
	return openAPIJSON, openAPIErr
}

func (o *Ops) handleOpenAPI(w http.ResponseWriter, r *http.Request) {
	b, err := OpenAPIJSON()
	if err != nil {
		WriteError(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}
