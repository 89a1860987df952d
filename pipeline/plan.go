package pipeline

import "github.com/apache/arrow/go/v17/arrow"

// Plan is what the diff stage decided for one file and what apply carries
// out: Arrow records of user and department actions (schemas.PlanUsers and
// schemas.PlanDepartments), and the counts a dry run prints.
type Plan struct {
	Users       []arrow.Record
	Departments []arrow.Record
	// Digests are row digests to store for users the file leaves as they
	// are (schemas.PlanDigests); nil when there are none.
	Digests arrow.Record
	Counts  Counts
}

// Release frees the plan's Arrow memory.
func (p *Plan) Release() {
	for _, r := range p.Users {
		r.Release()
	}
	for _, r := range p.Departments {
		r.Release()
	}
	if p.Digests != nil {
		p.Digests.Release()
	}
	p.Users, p.Departments, p.Digests = nil, nil, nil
}
