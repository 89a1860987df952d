package apply

import (
	"strings"
	"testing"
)

// TestPartitionName: a tenant's partition name fits PostgreSQL's 63 bytes
// for every tenant id the schema allows (1-63 of [a-z0-9_-]), and two ids
// never share one, however long the prefix they share.
func TestPartitionName(t *testing.T) {
	long := strings.Repeat("a", 63)
	cases := []struct{ tenant, want string }{
		{"acme", "users_of_acme"},
		{"a-b", "users_of_a-b"},
		{"a_b", "users_of_a_b"},
		{"default", "users_of_default"},
		{strings.Repeat("x", 54), "users_of_" + strings.Repeat("x", 54)},
	}
	for _, c := range cases {
		if got := partitionName(c.tenant); got != c.want {
			t.Errorf("partitionName(%q) = %q, want %q", c.tenant, got, c.want)
		}
	}
	seen := map[string]string{}
	for _, tenant := range []string{long, long[:62] + "b", long[:55], long[:55] + "b", strings.Repeat("x", 54), strings.Repeat("x", 55)} {
		name := partitionName(tenant)
		if len(name) > 63 {
			t.Errorf("partitionName(%q) = %q: %d bytes, more than PostgreSQL keeps", tenant, name, len(name))
		}
		if other, ok := seen[name]; ok {
			t.Errorf("tenants %q and %q share the partition name %q", other, tenant, name)
		}
		seen[name] = tenant
	}
}
