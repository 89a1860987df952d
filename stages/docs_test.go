package stages_test

import (
	"flag"
	"os"
	"testing"

	"github.com/roster-hr/roster/stages"
)

var update = flag.Bool("update", false, "rewrite STAGES.md from the stage declarations")

// TestStagesDoc keeps STAGES.md what the stages declare: the same specs
// validate pipeline YAML and produce this reference, so it cannot drift.
// Regenerate with: go test ./stages -run TestStagesDoc -update
func TestStagesDoc(t *testing.T) {
	want := "# Pipeline stages\n\n" +
		"Generated from the stage declarations (`roster stages` prints the same);\n" +
		"do not edit by hand: `go test ./stages -run TestStagesDoc -update`.\n" +
		"A pipeline YAML (`pipeline/default.yaml`, or `--pipeline FILE`) lists stages\n" +
		"by name with these options.\n\n" + stages.Registry().Docs()
	if *update {
		if err := os.WriteFile("STAGES.md", []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile("STAGES.md")
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Fatal("STAGES.md is out of date: go test ./stages -run TestStagesDoc -update")
	}
}
