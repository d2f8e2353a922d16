package airgap

// Progress draws byte-count bars; package main draws them on a terminal.
// A nil Progress draws nothing.
type Progress interface {
	// Bar adds a bar labelled name whose total grows as work is found.
	Bar(name string) Bar
	// Wait lets every bar draw its last state.
	Wait()
}

// Bar is one progress bar. One goroutine grows it; Add may be called
// from several.
type Bar interface {
	Grow(n int64) // more work became known
	Add(n int64)  // n bytes done
	Done()
	Fail()
}

type noBars struct{}

func (noBars) Bar(string) Bar { return noBar{} }
func (noBars) Wait()          {}

type noBar struct{}

func (noBar) Grow(int64) {}
func (noBar) Add(int64)  {}
func (noBar) Done()      {}
func (noBar) Fail()      {}

func orNone(p Progress) Progress {
	if p == nil {
		return noBars{}
	}
	return p
}
