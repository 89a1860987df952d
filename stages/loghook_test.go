package stages_test

import (
	"context"
	"log/slog"
)

// logHook is a slog.Handler that hands each record's message and integer
// attributes to the function, debug records included: how a test counts
// what a run's log says it did (diff's incremental path, apply's
// speculations). The run's own attributes (tenant, run) are left out.
type logHook func(msg string, ints map[string]int64)

func (logHook) Enabled(context.Context, slog.Level) bool { return true }
func (h logHook) WithAttrs([]slog.Attr) slog.Handler     { return h }
func (h logHook) WithGroup(string) slog.Handler          { return h }
func (h logHook) Handle(_ context.Context, r slog.Record) error {
	ints := map[string]int64{}
	r.Attrs(func(a slog.Attr) bool {
		if a.Value.Kind() == slog.KindInt64 {
			ints[a.Key] = a.Value.Int64()
		}
		return true
	})
	h(r.Message, ints)
	return nil
}
