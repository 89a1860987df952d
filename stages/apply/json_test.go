package apply

import (
	"encoding/json"
	"testing"
)

// TestAppendJSONString: whatever the text, the JSON written decodes back
// to it, so the history PostgreSQL stores is the text the file had.
func TestAppendJSONString(t *testing.T) {
	for _, s := range []string{"", "Ada", `say "hi"`, `C:\path`, "tab\there\nnew\rline\x00nul\x1f", "Zoë Ødegaard — 東京", "<b>&amp;</b>", "\u2028\u2029", "'=1+2"} {
		out := appendJSONString(nil, s)
		var back string
		if err := json.Unmarshal(out, &back); err != nil {
			t.Fatalf("%q → %s: %v", s, out, err)
		}
		if back != s {
			t.Fatalf("%q → %s → %q", s, out, back)
		}
	}
}
