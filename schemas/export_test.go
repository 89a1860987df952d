package schemas

// MigrateTo exposes migrateTo to the tests of package schemas_test.
var MigrateTo = migrateTo
