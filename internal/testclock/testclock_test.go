package testclock

import (
	"testing"
	"time"
)

func TestClock(t *testing.T) {
	c := New()
	start := c.Now()
	if c.Now() != start {
		t.Fatal("the clock moved by itself")
	}
	c.Advance(time.Minute)
	if got := c.Now().Sub(start); got != time.Minute {
		t.Fatalf("Advance(1m) moved it %v", got)
	}
}
