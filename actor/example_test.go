package actor_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"time"

	proto "github.com/asynkron/protoactor-go/actor"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/actor"
	"github.com/go-tokenmanager/tokenmanager/messages"
)

func ExampleNewProps() {
	system := proto.NewActorSystem(proto.WithLoggerFactory(func(*proto.ActorSystem) *slog.Logger {
		return slog.New(slog.DiscardHandler)
	}))
	defer system.Shutdown()

	props, err := actor.NewProps(tokenmanager.Settings{
		GetCredentials: func(ctx context.Context) (tokenmanager.Token, error) {
			return tokenmanager.Token{AccessToken: "tenant-a-token", ExpiresIn: 3600}, nil
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	pid, err := system.Root.SpawnNamed(props, "tokens/tenant-a")
	if err != nil {
		log.Fatal(err)
	}
	defer func() { system.Root.StopFuture(pid).Wait() }()

	// Ask for a token; the reply is always a *messages.TokenResult.
	res, err := system.Root.RequestFuture(pid, messages.Get{}, 5*time.Second).Result()
	if err != nil {
		log.Fatal(err)
	}
	r := res.(*messages.TokenResult)
	fmt.Println(r.Token.AccessToken, r.Err, time.Until(r.ExpiresAt) > 59*time.Minute)
	// Output: tenant-a-token <nil> true
}

func ExampleNewOwnerProps() {
	system := proto.NewActorSystem(proto.WithLoggerFactory(func(*proto.ActorSystem) *slog.Logger {
		return slog.New(slog.DiscardHandler)
	}))
	defer system.Shutdown()

	props, err := actor.NewOwnerProps(tokenmanager.OwnerSettings{
		// Each identity's settings, looked up when it is first needed.
		SettingsFor: func(identity string) (tokenmanager.Settings, error) {
			return tokenmanager.Settings{
				GetCredentials: func(ctx context.Context) (tokenmanager.Token, error) {
					return tokenmanager.Token{AccessToken: identity + "-token", ExpiresIn: 3600}, nil
				},
			}, nil
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	owner := system.Root.Spawn(props)
	defer func() { system.Root.StopFuture(owner).Wait() }()

	// Address an identity through the owner; its token actor answers.
	for _, id := range []string{"tenant=acme", "tenant=globex"} {
		res, err := system.Root.RequestFuture(owner, messages.Get{Identity: id}, 5*time.Second).Result()
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(res.(*messages.TokenResult).Token.AccessToken)
	}
	// Output:
	// tenant=acme-token
	// tenant=globex-token
}
