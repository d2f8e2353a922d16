package realclient

import (
	"fmt"
	"runtime"
)

func sprintf(format string, args ...any) string { return fmt.Sprintf(format, args...) }
func runtimeGoexit()                            { runtime.Goexit() }
