package main

import (
	"io"
	"os"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"

	"github.com/regmirror/regmirror/airgap"
)

// progress draws byte-count bars (mpb) on a terminal and nothing
// elsewhere, so that logs and test output stay clean. Its methods, and
// those of the bars it makes, do nothing when it draws nothing.
type progress struct {
	p *mpb.Progress
}

// newProgress draws on w if w is a terminal.
func newProgress(w io.Writer) *progress {
	if !isTerminal(w) {
		return &progress{}
	}
	return &progress{p: mpb.New(mpb.WithOutput(w), mpb.WithWidth(40))}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// Bar adds a bar labelled name, of bytes not known yet (see Grow); the
// last bar added is drawn last.
func (pr *progress) Bar(name string) airgap.Bar { return pr.bar(name) }

func (pr *progress) bar(name string) *bar {
	if pr.p == nil {
		return &bar{}
	}
	b := pr.p.AddBar(0,
		mpb.PrependDecorators(decor.Name(name, decor.WCSyncSpaceR)),
		mpb.AppendDecorators(
			decor.CountersKibiByte("% .1f / % .1f", decor.WCSyncSpace),
			decor.OnAbort(decor.OnComplete(decor.Percentage(decor.WCSyncSpace), " done"), " failed"),
		),
	)
	return &bar{b: b}
}

// Wait lets every bar draw its last state and stops drawing.
func (pr *progress) Wait() {
	if pr.p != nil {
		pr.p.Wait()
	}
}

// bar is one progress bar; a nil *mpb.Bar draws nothing.
type bar struct {
	b     *mpb.Bar
	total int64 // what Grow has announced; one goroutine grows a bar
}

// Add counts n more bytes done.
func (b *bar) Add(n int64) {
	if b.b != nil {
		b.b.IncrInt64(n)
	}
}

// Grow raises the total by n bytes as more of the work becomes known.
func (b *bar) Grow(n int64) {
	b.total += n
	if b.b != nil {
		b.b.SetTotal(b.total, false)
	}
}

// Done completes the bar at whatever it has counted.
func (b *bar) Done() {
	if b.b != nil {
		b.b.SetTotal(-1, true)
	}
}

// Fail ends the bar as failed, keeping it on screen.
func (b *bar) Fail() {
	if b.b != nil {
		b.b.Abort(false)
	}
}

// progress and bar draw airgap's progress too.
var (
	_ airgap.Progress = (*progress)(nil)
	_ airgap.Bar      = (*bar)(nil)
)
