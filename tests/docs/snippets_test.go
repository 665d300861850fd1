// Package docs_test checks that every Go snippet in README.md and docs/
// compiles against the library as it is, so the documentation cannot drift
// from the API.
//
// A snippet that starts with "package" is compiled as it stands. Any other
// snippet is a fragment: its leading import block (if any) stays at file
// level, the rest becomes the body of
//
//	func snippet() error { <fragment>; return nil }
//
// Packages the fragment names but does not import are imported from the
// table below, and the variables a reader is assumed to have (ctx, req,
// settings, a protoactor system, ...) are declared at package level. A
// fragment still has to use what it declares and read every error it
// assigns: "declared and not used" fails the test, as it would in a
// reader's program.
package docs_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// knownImports maps the package names fragments use to their import paths.
var knownImports = map[string]string{
	"tokenmanager":  "github.com/go-tokenmanager/tokenmanager",
	"transport":     "github.com/go-tokenmanager/tokenmanager/transport",
	"providers":     "github.com/go-tokenmanager/tokenmanager/providers",
	"messages":      "github.com/go-tokenmanager/tokenmanager/messages",
	"actor":         "github.com/go-tokenmanager/tokenmanager/actor",
	"observability": "github.com/go-tokenmanager/tokenmanager/observability",
	"grpcauth":      "github.com/go-tokenmanager/tokenmanager/grpcauth",
	"tokengrain":    "github.com/go-tokenmanager/tokenmanager/tokengrain",
	"users":         "github.com/go-tokenmanager/tokenmanager/users",
	"pgstore":       "github.com/go-tokenmanager/tokenmanager/pgstore",
	"cluster":       "github.com/asynkron/protoactor-go/cluster",
	"remote":        "github.com/asynkron/protoactor-go/remote",
	"disthash":      "github.com/asynkron/protoactor-go/cluster/identitylookup/disthash",
	"automanaged":   "github.com/asynkron/protoactor-go/cluster/clusterproviders/automanaged",
	"grpc":          "google.golang.org/grpc",
	"credentials":   "google.golang.org/grpc/credentials",
	"oauth2":        "golang.org/x/oauth2",
	"otel":          "go.opentelemetry.io/otel",
	"attribute":     "go.opentelemetry.io/otel/attribute",
	"clock":         "github.com/benbjohnson/clock",
	"context":       "context",
	"errors":        "errors",
	"fmt":           "fmt",
	"http":          "net/http",
	"url":           "net/url",
	"os":            "os",
	"slog":          "log/slog",
	"log":           "log",
	"time":          "time",
	"strings":       "strings",
	"x509":          "crypto/x509",
	"tls":           "crypto/tls",
}

// givens are what a fragment may use without declaring it. Their imports
// carry a given_ prefix so that they never clash with a fragment's own.
const givens = `
var (
	ctx         given_context.Context
	req         *given_http.Request
	settings    given_tokenmanager.Settings
	settingsFor given_tokenmanager.SettingsFunc
	system      *given_protoactor.ActorSystem
	logger      *given_slog.Logger
	target      string
	tlsCreds    given_credentials.TransportCredentials
	keyPEM      []byte
	tenant      string
	tokenURL    string
	podIP       string
	provider    given_cluster.ClusterProvider
	tenants     interface {
		Lookup(identity string) (struct{ Config given_providers.ClientCredentialsConfig }, error)
	}
	audienceFor func(host string) (string, error)
	googleCreds struct{ TokenSource given_oauth2.TokenSource }
	rt          *given_transport.RoundTripper
	auth        given_providers.ClientAuth
)
`

var givenImports = map[string]string{
	"given_context":      "context",
	"given_http":         "net/http",
	"given_tokenmanager": "github.com/go-tokenmanager/tokenmanager",
	"given_protoactor":   "github.com/asynkron/protoactor-go/actor",
	"given_slog":         "log/slog",
	"given_credentials":  "google.golang.org/grpc/credentials",
	"given_cluster":      "github.com/asynkron/protoactor-go/cluster",
	"given_providers":    "github.com/go-tokenmanager/tokenmanager/providers",
	"given_oauth2":       "golang.org/x/oauth2",
	"given_transport":    "github.com/go-tokenmanager/tokenmanager/transport",
}

type snippet struct {
	file string // relative to the repository root
	line int    // of the opening fence
	code string
}

var fence = regexp.MustCompile("(?m)^```go[ \t]*\n")

func extract(t *testing.T, root, rel string) []snippet {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, rel))
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	var out []snippet
	for _, loc := range fence.FindAllStringIndex(text, -1) {
		rest := text[loc[1]:]
		end := strings.Index(rest, "\n```")
		if end < 0 {
			t.Fatalf("%s: unterminated ```go block", rel)
		}
		out = append(out, snippet{
			file: rel,
			line: strings.Count(text[:loc[0]], "\n") + 1,
			code: rest[:end+1],
		})
	}
	return out
}

// wrap turns a fragment into a compilable file.
// The offset it returns is what to subtract from a line of the wrapped
// file to get the document's line.
func wrap(s snippet) (string, int, error) {
	if strings.HasPrefix(strings.TrimSpace(s.code), "package ") {
		return s.code, -s.line, nil
	}
	lines := strings.Split(s.code, "\n")
	var imports, body []string
	i := 0
	for i < len(lines) && strings.TrimSpace(lines[i]) == "" {
		i++
	}
	if i < len(lines) && strings.HasPrefix(lines[i], "import ") {
		if strings.HasPrefix(lines[i], "import (") {
			for ; i < len(lines); i++ {
				imports = append(imports, lines[i])
				if strings.TrimSpace(lines[i]) == ")" {
					i++
					break
				}
			}
		} else {
			imports = append(imports, lines[i])
			i++
		}
	}
	body = lines[i:]

	src := "package snippet\n\n" + strings.Join(imports, "\n") + "\n\nfunc snippet() error {\n" +
		strings.Join(body, "\n") + "\nreturn nil\n}\n" + givens
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "", src, 0)
	if err != nil {
		return "", 0, err
	}
	have := map[string]bool{}
	for _, im := range f.Imports {
		p := strings.Trim(im.Path.Value, `"`)
		name := p[strings.LastIndex(p, "/")+1:]
		if im.Name != nil {
			name = im.Name.Name
		}
		have[name] = true
	}
	need := map[string]string{}
	for alias, p := range givenImports {
		need[alias] = p
	}
	ast.Inspect(f, func(n ast.Node) bool {
		sel, ok := n.(*ast.SelectorExpr)
		if !ok {
			return true
		}
		id, ok := sel.X.(*ast.Ident)
		if !ok || id.Obj != nil || have[id.Name] {
			return true
		}
		if p, ok := knownImports[id.Name]; ok {
			need[id.Name] = p
		}
		return true
	})
	// A fragment shows values the reader goes on to use; every one but err
	// is marked used at the end. An err that is assigned and never read
	// stays an error.
	var uses []string
	for _, d := range f.Decls {
		fn, ok := d.(*ast.FuncDecl)
		if !ok || fn.Name.Name != "snippet" {
			continue
		}
		seen := map[string]bool{}
		for _, st := range fn.Body.List {
			var names []*ast.Ident
			switch st := st.(type) {
			case *ast.AssignStmt:
				if st.Tok == token.DEFINE {
					for _, l := range st.Lhs {
						if id, ok := l.(*ast.Ident); ok {
							names = append(names, id)
						}
					}
				}
			case *ast.DeclStmt:
				if g, ok := st.Decl.(*ast.GenDecl); ok && g.Tok == token.VAR {
					for _, sp := range g.Specs {
						names = append(names, sp.(*ast.ValueSpec).Names...)
					}
				}
			}
			for _, id := range names {
				if id.Name != "_" && id.Name != "err" && !seen[id.Name] {
					seen[id.Name] = true
					uses = append(uses, "_ = "+id.Name)
				}
			}
		}
	}
	var added []string
	for name, p := range need {
		added = append(added, fmt.Sprintf("import %s %q", name, p))
	}
	sort.Strings(added)
	head := "package snippet\n\n" + strings.Join(added, "\n") + "\n" + strings.Join(imports, "\n") +
		"\n\nfunc snippet() error {\n"
	// Line numbers in the wrapped file map back to the document: the body's
	// first line is the document's line s.line+1+i.
	offset := strings.Count(head, "\n") + 1 - (s.line + 1 + i)
	return head + strings.Join(body, "\n") + "\n" + strings.Join(uses, "\n") + "\nreturn nil\n}\n" + givens, offset, nil
}

func TestSnippetsCompile(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles every documentation snippet")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	files := []string{"README.md"}
	docs, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range docs {
		rel, _ := filepath.Rel(root, d)
		files = append(files, rel)
	}

	var all []snippet
	for _, f := range files {
		all = append(all, extract(t, root, f)...)
	}
	if len(all) < 10 {
		t.Fatalf("found %d Go snippets in %v; the extraction is broken", len(all), files)
	}

	// Each snippet becomes a package in a directory that exists only in a
	// build overlay, inside this module, so it compiles against the
	// workspace's modules and writes nothing to the tree.
	tmp := t.TempDir()
	overlay := map[string]string{}
	type placed struct {
		snippet
		offset int
	}
	byFile := map[string]placed{}
	var dirs []string
	here, _ := filepath.Abs(".")
	for i, s := range all {
		src, offset, err := wrap(s)
		if err != nil {
			t.Errorf("%s:%d: does not parse: %v", s.file, s.line, err)
			continue
		}
		dir := filepath.Join(here, "snippet_overlay", fmt.Sprintf("s%03d", i))
		real := filepath.Join(tmp, fmt.Sprintf("s%03d.go", i))
		if err := os.WriteFile(real, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		overlay[filepath.Join(dir, "snippet.go")] = real
		byFile[real] = placed{s, offset}
		dirs = append(dirs, "./"+filepath.Join("snippet_overlay", fmt.Sprintf("s%03d", i)))
	}
	ob, err := json.Marshal(map[string]any{"Replace": overlay})
	if err != nil {
		t.Fatal(err)
	}
	ovFile := filepath.Join(tmp, "overlay.json")
	if err := os.WriteFile(ovFile, ob, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", append([]string{"build", "-overlay", ovFile}, dirs...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		// Map each error back to its document.
		at := regexp.MustCompile(`(\S+\.go):(\d+):`)
		msg := at.ReplaceAllStringFunc(out.String(), func(m string) string {
			sm := at.FindStringSubmatch(m)
			p, ok := byFile[sm[1]]
			if !ok {
				return m
			}
			var n int
			fmt.Sscan(sm[2], &n)
			return fmt.Sprintf("%s:%d:", p.file, n-p.offset)
		})
		t.Fatalf("documentation snippets do not compile:\n%s", msg)
	}
	t.Logf("%d snippets in %d files compile", len(all), len(files))
}
