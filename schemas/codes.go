package schemas

import "fmt"

// Issue codes, exactly as FILE_RULES.md spells them. They are a contract:
// they appear in the ledger, in --json output and in customers' reports, so
// never rename one.
const (
	// File-level (the file is rejected).
	CodeUnsupportedFormat     = "unsupported_format"
	CodeInvalidEncoding       = "invalid_encoding"
	CodeEmptyFile             = "empty_file"
	CodeWrongDelimiter        = "wrong_delimiter"
	CodeMalformedCSV          = "malformed_csv"
	CodeUnknownFileKind       = "unknown_file_kind"
	CodeMissingRequiredColumn = "missing_required_column"
	CodeFileTooLarge          = "file_too_large"
	CodeDecryptFailed         = "decrypt_failed"
	CodeDecryptTooLarge       = "decrypt_too_large"
	CodeEncryptionRequired    = "encryption_required"
	CodeMassDeactivationGuard = "mass_deactivation_guard"
	CodeDuplicateFile         = "duplicate_file" // info

	// Row-level.
	CodeUnknownColumn               = "unknown_column" // warning
	CodeMalformedRow                = "malformed_row"
	CodeEmailRequired               = "email_required"
	CodeEmailTooLong                = "email_too_long"
	CodeEmailInvalid                = "email_invalid"
	CodeFirstNameRequired           = "first_name_required"
	CodeFirstNameTooLong            = "first_name_too_long"
	CodeLastNameRequired            = "last_name_required"
	CodeLastNameTooLong             = "last_name_too_long"
	CodeFieldTooLong                = "field_too_long"
	CodeInvalidDate                 = "invalid_date"
	CodeInvalidValue                = "invalid_value"
	CodeManagerNotFound             = "manager_not_found"
	CodeSelfManager                 = "self_manager"
	CodeManagerCycle                = "manager_cycle"
	CodeDepartmentReactivated       = "department_reactivated" // warning
	CodeDuplicateEmployeeID         = "duplicate_employee_id"
	CodeDuplicateEmail              = "duplicate_email"
	CodeEmailInUse                  = "email_in_use"
	CodeLicenseLimitExceeded        = "license_limit_exceeded"
	CodeDepartmentNameRequired      = "department_name_required"
	CodeDuplicateDepartment         = "duplicate_department"
	CodeDepartmentParentNotFound    = "department_parent_not_found"
	CodeDepartmentCycle             = "department_cycle"
	CodeDepartmentHasActiveUsers    = "department_has_active_users"
	CodeDepartmentHasActiveChildren = "department_has_active_children"
)

// HasActiveUsersMessage explains department_has_active_users.
func HasActiveUsersMessage(dept string, n int) string {
	return fmt.Sprintf("department %q still has %d active users at the end of the run; move or deactivate them first (it stays active)", dept, n)
}

// HasActiveChildrenMessage explains department_has_active_children.
func HasActiveChildrenMessage(dept, child string) string {
	return fmt.Sprintf("department %q still has the active sub-department %q at the end of the run; deactivate or move it first (it stays active)", dept, child)
}
