// Package actor holds the token actor: the one owner of a token's state.
//
// Spawn it from [NewProps] in any protoactor ActorSystem and talk to it
// with the messages package: [messages.Get] (reply *messages.TokenResult),
// [messages.Invalidate] and [messages.Refreshed]. transport.New spawns one
// for you; transport.NewFromActor attaches a RoundTripper to one you
// spawned. [NewOwnerProps] makes an owner of many identities.
//
// The actor never blocks its mailbox: the provider runs on a goroutine of
// its own whose outcome comes back as a message, timers (on
// Settings.Clock) send messages too, and events go to bounded
// per-subscriber queues. After every change it publishes an immutable
// snapshot that RoundTrippers read without a message, so a cached token
// costs a request one atomic load.
//
// Its events (TokenRefreshed, TokenRequestFailed,
// TokenTryThresholdReached) are also published on the actor system's
// EventStream, from a goroutine of their own so a slow EventStream
// subscriber cannot stall the actor; subscribe there with
// system.EventStream.SubscribeWithPredicate to receive them as an actor
// would.
//
// # The state machine
//
// A token's state is one plain value (state, in state.go) with five
// sub-states, each with its invariants beside its fields:
//
//   - cache: the token cached (cur, published to readers as a snapshot),
//     its generation, whether its early refresh is due, the token last
//     dropped;
//   - fetch: whether a provider call runs, its id, start and reason, the
//     tokens rejected while it runs;
//   - backoff: failures in a row, the last one, no fetch before
//     notBefore, whether a retry timer is armed;
//   - hold: tokens in a row rejected on first use (a streak, which past a
//     bound puts requests on hold);
//   - waiters: messages.Get senders (askers) and requests' waits.
//
// Its transitions (transitions.go) take the time on the settings' clock
// and return effects: reply to the sender, answer the askers and waits
// handed over, start the fetch, arm or stop a refresh or retry timer,
// publish events. A host carries them out: the token actor of [NewProps]
// (actor.go) or the owner of [NewOwnerProps] for each identity (owner.go,
// hosted.go: one allocation per identity, no process of its own).
// Policies say how hosts differ: the early refresh by a timer or on use,
// events on a bus of its own or on a shared one, passivation allowed.
//
//	message                     method       when                            then
//	messages.Get                get          token fresh                     reply it; on use past RefreshAt: refreshDue
//	                                         backing off after a failure     reply the failure
//	                                         otherwise                       queue the asker; ensureFetch
//	protocol.Wait               wait         token fresh                     reply it
//	                                         permanent failure, backing off  reply the failure
//	                                         otherwise                       queue the wait; ensureFetch
//	(ensureFetch)               ensureFetch  fetch running                   nothing
//	                                         backing off                     arm the retry timer (once)
//	                                         otherwise                       startFetch: fetch, stop the retry timer
//	fetchDone                   fetched      another id (stale)              nothing
//	                                         token rejected while it ran     startFetch if needed
//	                                         valid token                     store: cache, publish, answer all,
//	                                                                         arm the refresh (timer or RefreshAt),
//	                                                                         TokenRefreshed
//	                                         failure                         fail: backoff, answer askers (and waits
//	                                                                         if permanent), arm the retry if needed,
//	                                                                         TokenRequestFailed (and threshold)
//	refreshTick,                refreshDue   same generation                 due; end the streak; ensureFetch
//	protocol.RefreshNow
//	retryTick                   retryDue     same seq, no fetch, needed      startFetch
//	messages.Invalidate         invalidate   the cached token (or any)       drop it, stop the refresh; while
//	protocol.Rejected                                                        fetching, never cache it again;
//	                                                                         count the streak, maybe hold
//	protocol.Served             endStreak    streak                          end it, lift the hold
//	messages.Refreshed          pushed       failure                         fail
//	                                         invalid token                   PushRejected
//	                                         valid token                     store
//	passivation (owner)         idle         may passivate, nothing running, the owner drops it
//	                                         nobody waits, unused since
//	stop                        stop         always                          cancel the fetch, stop timers,
//	                                                                         answer all, withdraw the snapshot
package actor
