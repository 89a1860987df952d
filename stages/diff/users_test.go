package diff

import (
	"fmt"
	"testing"

	"github.com/roster-hr/roster/schemas"
)

// TestDeptKeys: the per-goroutine cache gives what schemas.Key gives, for
// names seen again and for names past its size limit, where it stops
// growing.
func TestDeptKeys(t *testing.T) {
	k := deptKeys{}
	for round := 0; round < 2; round++ {
		for i := 0; i < deptKeysMax+100; i++ {
			name := fmt.Sprintf("  Dept %d ÉÈ ", i)
			if got, want := k.of(name), schemas.Key(name); got != want {
				t.Fatalf("of(%q) = %q, want %q", name, got, want)
			}
		}
	}
	if len(k) != deptKeysMax {
		t.Errorf("the cache holds %d names, want its limit %d", len(k), deptKeysMax)
	}
}

// TestPlanWidth: the plan builders' fixed-size arrays cover every column
// of the plan's schema.
func TestPlanWidth(t *testing.T) {
	if n := len(schemas.PlanUsers().Fields()); n != planWidth {
		t.Fatalf("schemas.PlanUsers has %d columns, planWidth is %d", n, planWidth)
	}
}
