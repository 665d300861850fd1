package tokenmanager_test

import (
	"encoding/json"
	"fmt"

	"github.com/go-tokenmanager/tokenmanager"
)

func ExampleSettings_Validate() {
	s := tokenmanager.Settings{RefreshBuffer: -1, RefreshOnStatus: []int{401, 1000}}
	fmt.Println(s.Validate())
	// Output:
	// tokenmanager: GetCredentials is nil; a TokenProvider is required
	// tokenmanager: RefreshBuffer is -1ns; it must not be negative
	// tokenmanager: RefreshOnStatus holds 1000; only error statuses (400 to 599) can mean a rejected token
}

func ExampleToken() {
	var tok tokenmanager.Token
	// Some servers send expires_in as a string.
	err := json.Unmarshal([]byte(`{"access_token":"abc","token_type":"Bearer","expires_in":"3600"}`), &tok)
	fmt.Println(err, tok.ExpiresIn)
	fmt.Println(tok) // String never prints the access token
	// Output:
	// <nil> 3600
	// Token{TokenType:"Bearer" ExpiresIn:3600 Scope:"" AccessToken:<3 bytes>}
}
