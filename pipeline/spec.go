package pipeline

import (
	_ "embed"
	"fmt"
	"os"

	"gopkg.in/yaml.v3"
)

//go:embed default.yaml
var defaultSpec []byte

// SpecFile is the declarative pipeline: an ordered list of stages by name,
// each with options that override the stage's declared defaults.
type SpecFile struct {
	Stages []struct {
		Name    string         `yaml:"name"`
		Options map[string]any `yaml:"options"`
	} `yaml:"stages"`
}

// Configured is one stage of a built pipeline.
type Configured struct {
	Spec  Spec
	Stage any // Stage or RunStage, per Spec.Scope
}

// DefaultSpec returns the embedded default pipeline YAML.
func DefaultSpec() []byte { return defaultSpec }

// LoadSpec reads a pipeline YAML file; an empty path means the default.
func LoadSpec(path string) ([]byte, error) {
	if path == "" {
		return defaultSpec, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read pipeline spec: %w", err)
	}
	return b, nil
}

// Build turns a pipeline YAML into configured stages, checking every stage
// name and option against the registry. overrides (per stage name) win over
// the YAML, so a tenant or an operator can change one option.
func Build(reg *Registry, yamlSpec []byte, overrides map[string]Options) ([]Configured, error) {
	var sf SpecFile
	if err := yaml.Unmarshal(yamlSpec, &sf); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadSpec, err)
	}
	if len(sf.Stages) == 0 {
		return nil, fmt.Errorf("%w: no stages", ErrBadSpec)
	}
	var out []Configured
	seen := map[string]bool{}
	for _, s := range sf.Stages {
		spec, err := reg.Lookup(s.Name)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadSpec, err)
		}
		if seen[s.Name] {
			return nil, fmt.Errorf("%w: stage %q listed twice", ErrBadSpec, s.Name)
		}
		seen[s.Name] = true
		opts := spec.Defaults()
		known := map[string]bool{}
		for _, f := range spec.Fields {
			known[f.Name] = true
		}
		for _, src := range []map[string]any{s.Options, overrides[s.Name]} {
			for k, v := range src {
				if !known[k] {
					return nil, fmt.Errorf("%w: stage %q has no option %q", ErrBadSpec, s.Name, k)
				}
				opts[k] = v
			}
		}
		st, err := spec.New(opts)
		if err != nil {
			return nil, fmt.Errorf("%w: stage %q: %v", ErrBadSpec, s.Name, err)
		}
		switch spec.Scope {
		case PerFile:
			if _, ok := st.(Stage); !ok {
				return nil, fmt.Errorf("%w: stage %q is not a per-file stage", ErrBadSpec, s.Name)
			}
		case PerRun:
			if _, ok := st.(RunStage); !ok {
				return nil, fmt.Errorf("%w: stage %q is not a per-run stage", ErrBadSpec, s.Name)
			}
		}
		out = append(out, Configured{Spec: spec, Stage: st})
	}
	return out, nil
}
