package status

import (
	"embed"
	"io/fs"
	"path"
)

//go:embed web
var web embed.FS

// Asset is one file of the page.
type Asset struct {
	Body        []byte
	ContentType string
}

// Page returns the page's file called name ("index.html", "status.css",
// "status.js"); ok is false for any other name.
func Page(name string) (a Asset, ok bool) {
	types := map[string]string{
		".html": "text/html; charset=utf-8",
		".css":  "text/css; charset=utf-8",
		".js":   "text/javascript; charset=utf-8",
	}
	ct, known := types[path.Ext(name)]
	if !known || path.Base(name) != name {
		return Asset{}, false
	}
	b, err := fs.ReadFile(web, "web/"+name)
	if err != nil {
		return Asset{}, false
	}
	return Asset{Body: b, ContentType: ct}, true
}
