// Package logline owns regmirror's log output format and a fast path for
// the one line that is written per request.
//
// New builds the *slog.Logger every command logs through: slog's own text
// or JSON handler over a writer. Its handler also carries a Writer that
// formats a line of fixed shape (a message and string, integer and float
// attributes) straight into a pooled buffer, byte for byte as that slog
// handler would, without building a slog.Record, boxing values or taking
// the handler's generic path. proxy's request log takes it when its logger
// is the root logger (LinesOf); loggers derived with With or WithGroup do
// not carry it, since their lines hold attributes the fast path does not
// know. The two paths share one lock around the writer, so their lines
// never interleave.
//
// Equality with slog is a test, not a hope: TestMatchesSlog and
// FuzzMatchesSlog compare both outputs for random values.
package logline
