package export

import (
	"encoding/json"
	"fmt"
)

// event is one row of employee_events before the user's columns.
type event struct {
	date     day
	typ      string
	old, new *string
}

type change struct {
	Old json.RawMessage `json:"old"`
	New json.RawMessage `json:"new"`
}

func parseChanges(u *user) (map[string]change, error) {
	var ch map[string]change
	if err := json.Unmarshal([]byte(u.changes), &ch); err != nil {
		return nil, fmt.Errorf("export: changes of user %d by run %d: %w", u.id, u.runID, err)
	}
	return ch, nil
}

var (
	sTrue  = "true"
	sFalse = "false"
)

func later(a, b day) day {
	if a > b {
		return a
	}
	return b
}

// deriveEvents turns one recorded change (u: the user after it) into
// events, in order: a hire or rehire first, then field changes, a
// termination last.
//
//   - A user's first record is a hire, dated by the start date, or the date
//     roster first saw the user when the file gave none; a user who arrived
//     already deactivated also gets a termination.
//   - active true→false is a termination on the change's effective date,
//     never before the start date of the employment it ends (so every
//     termination follows its hire); false→true a rehire, dated by the new
//     start date when the same change set one, else the effective date.
//   - manager, department, title, location and e-mail changes.
func deriveEvents(u *user, ch map[string]change) []event {
	eff := *u.effDate
	if u.action == "create" {
		hire := eff
		if u.start != nil {
			hire = *u.start
		}
		evs := []event{{date: hire, typ: EventHire, new: &sTrue}}
		if !u.active {
			end := eff
			if u.deact != nil {
				end = *u.deact
			}
			evs = append(evs, event{date: later(end, hire), typ: EventTermination, old: &sTrue, new: &sFalse})
		}
		return evs
	}
	var evs []event
	var termination *event
	if c, ok := ch["active"]; ok {
		was, is := jbool(c.Old), jbool(c.New)
		switch {
		case was != nil && is != nil && !*was && *is:
			date := eff
			if s, ok := ch["start_date"]; ok && jstr(s.New) != nil && u.start != nil {
				date = *u.start
			}
			evs = append(evs, event{date: date, typ: EventRehire, old: &sFalse, new: &sTrue})
		case was != nil && is != nil && *was && !*is:
			date := eff
			if u.prevStart != nil {
				date = later(date, *u.prevStart)
			} else if u.firstSeen != nil {
				date = later(date, *u.firstSeen)
			}
			termination = &event{date: date, typ: EventTermination, old: &sTrue, new: &sFalse}
		}
	}
	if _, ok := ch["manager_id"]; ok {
		evs = append(evs, event{date: eff, typ: EventManagerChange,
			old: orElse(u.oldMgrEID, u.oldMgrEmail), new: orElse(u.newMgrEID, u.newMgrEmail)})
	}
	for _, f := range []struct{ field, typ string }{
		{"department", EventDepartmentChange}, {"title", EventTitleChange},
		{"location", EventLocationChange}, {"email", EventEmailChange},
	} {
		if c, ok := ch[f.field]; ok {
			evs = append(evs, event{date: eff, typ: f.typ, old: jstr(c.Old), new: jstr(c.New)})
		}
	}
	if termination != nil {
		evs = append(evs, *termination)
	}
	return evs
}

func orElse(a, b *string) *string {
	if a != nil {
		return a
	}
	return b
}
