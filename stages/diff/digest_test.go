package diff

import (
	"slices"
	"testing"

	"github.com/lib/pq"
	"github.com/roster-hr/roster/pipeline/pgtest"
)

// TestArrayLiteral: the keys loadReach asks for reach the server as they
// are, whatever quotes, backslashes, commas or braces they hold (an
// e-mail's local part may have most of them), and no keys at all is a
// valid, empty array.
func TestArrayLiteral(t *testing.T) {
	db, _ := pgtest.New(t)
	for _, keys := range [][]string{
		nil,
		{"plain@example.com"},
		{`"quoted"@example.com`, `back\slash`, "o'brien@example.com", "a,b", "{brace}", "NULL", " spaced ", "zoë@例え.jp"},
	} {
		var got []string
		if err := db.Select(&got, `SELECT unnest(`+arrayLiteral(pq.StringArray(keys), "text[]")+`)`); err != nil {
			t.Fatalf("%q: %v", keys, err)
		}
		if !slices.Equal(got, keys) && !(len(got) == 0 && len(keys) == 0) {
			t.Errorf("sent %q, the server read %q", keys, got)
		}
	}
	var n []int64
	if err := db.Select(&n, `SELECT unnest(`+arrayLiteral(pq.Int64Array([]int64{1, -2, 1 << 40}), "bigint[]")+`)`); err != nil || !slices.Equal(n, []int64{1, -2, 1 << 40}) {
		t.Errorf("ids: %v %v", n, err)
	}
}
