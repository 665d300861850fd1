package messages_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"testing"

	"github.com/go-tokenmanager/tokenmanager/messages"
)

// An event type added to the package gets GetIdentity along with Name, so
// that IdentityOf and its users need no change.
func TestEvents_everyEventHasGetIdentity(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "messages.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	methods := map[string]map[string]bool{} // receiver type -> method names
	for _, d := range f.Decls {
		fn, ok := d.(*ast.FuncDecl)
		if !ok || fn.Recv == nil {
			continue
		}
		typ := fn.Recv.List[0].Type
		if star, ok := typ.(*ast.StarExpr); ok {
			typ = star.X
		}
		name := typ.(*ast.Ident).Name
		if methods[name] == nil {
			methods[name] = map[string]bool{}
		}
		methods[name][fn.Name.Name] = true
	}
	events := 0
	for typ, m := range methods {
		if !m["Name"] {
			continue
		}
		events++
		if !m["GetIdentity"] {
			t.Errorf("event %s has Name but no GetIdentity", typ)
		}
	}
	if events < 10 {
		t.Errorf("found %d event types in messages.go; want at least 10", events)
	}
}

// customEvent is an event of other code that names its identity.
type customEvent struct{ tenant string }

func (customEvent) Name() string          { return "custom" }
func (e customEvent) GetIdentity() string { return e.tenant }

// bareEvent is an event of other code without GetIdentity.
type bareEvent struct{}

func (bareEvent) Name() string { return "bare" }

func TestIdentityOf_otherEvents(t *testing.T) {
	tests := []struct {
		name string
		ev   messages.Event
		want string
	}{
		{"with GetIdentity", customEvent{tenant: "t-1"}, "t-1"},
		{"without GetIdentity", bareEvent{}, ""},
		{"nil", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := messages.IdentityOf(tt.ev); got != tt.want {
				t.Errorf("IdentityOf(%#v) = %q; want %q", tt.ev, got, tt.want)
			}
		})
	}
}
