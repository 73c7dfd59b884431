// Command gen writes the texts generated from cuesched's settings
// (internal/config): the README's settings table, between its markers, and
// deploy/cuesched.example.yaml. Run it from anywhere in the repository:
// go run ./internal/config/gen (or go generate ./internal/config).
package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cuesched/cuesched/internal/config"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

func run() error {
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	readme := filepath.Join(root, config.READMEPath)
	raw, err := os.ReadFile(readme)
	if err != nil {
		return err
	}
	updated, err := config.ReplaceTable(string(raw))
	if err != nil {
		return fmt.Errorf("%s: %w", readme, err)
	}
	if err := os.WriteFile(readme, []byte(updated), 0o644); err != nil {
		return err
	}
	example := filepath.Join(root, config.ExamplePath)
	if err := os.MkdirAll(filepath.Dir(example), 0o755); err != nil {
		return err
	}
	return os.WriteFile(example, []byte(config.ExampleYAML()), 0o644)
}

// moduleRoot is the nearest directory at or above the working one holding
// go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod at or above the working directory: run gen inside the repository")
		}
		dir = parent
	}
}
