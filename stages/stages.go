// Package stages is the registry of roster's pipeline stages. Adding a stage
// is one package and one line here.
package stages

import (
	"github.com/roster-hr/roster/pipeline"
	"github.com/roster-hr/roster/stages/apply"
	"github.com/roster-hr/roster/stages/decrypt"
	"github.com/roster-hr/roster/stages/diff"
	"github.com/roster-hr/roster/stages/export"
	"github.com/roster-hr/roster/stages/fetch"
	"github.com/roster-hr/roster/stages/normalize"
	"github.com/roster-hr/roster/stages/parse"
	"github.com/roster-hr/roster/stages/report"
	"github.com/roster-hr/roster/stages/validate"
)

// Registry returns a registry holding every stage roster ships.
func Registry() *pipeline.Registry {
	r := pipeline.NewRegistry()
	r.Register(fetch.Spec())
	r.Register(decrypt.Spec())
	r.Register(parse.Spec())
	r.Register(normalize.Spec())
	r.Register(validate.Spec())
	r.Register(diff.Spec())
	r.Register(apply.Spec())
	r.Register(report.Spec())
	r.Register(export.Spec())
	return r
}
