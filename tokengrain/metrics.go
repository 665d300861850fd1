package tokengrain

import "time"

// Recorder receives tokengrain's figures: asks of the grains, fallbacks,
// grain moves and refusals. *observability.ClusterMetrics implements it
// (OTel instruments and slog lines with documented names). Its methods
// are called on the asking goroutine, or the grain's, and must not block.
// Identities are passed as they are; no token or secret ever is.
type Recorder interface {
	// GrainAsked records one ask of identity's grain that got an answer:
	// whether the grain was on this member, how long the ask took, and
	// its outcome (one of the Outcome constants).
	GrainAsked(identity string, local bool, took time.Duration, outcome string)
	// FellBack records a direct fetch by this member because the cluster
	// did not serve it; reason is one of the Reason constants.
	FellBack(identity, reason string)
	// GrainMoved records that identity's grain answered from another
	// member than the last time this member asked it.
	GrainMoved(identity string)
	// Refused records a grain refusing a member (on the grain's side);
	// reason is RefusedInsecure or RefusedStaleConfig.
	Refused(identity, reason string)
}

// Outcomes of an ask, for [Recorder.GrainAsked].
const (
	OutcomeToken   = "token"   // the grain answered with a token
	OutcomePending = "pending" // the grain is still fetching
	OutcomeError   = "error"   // the grain's identity provider failed
	OutcomeRefused = "refused" // the grain would not serve this member
)

// Reasons for a direct fetch, for [Recorder.FellBack] and [Fallback].
const (
	ReasonUnreachable = "unreachable" // no answer within Options.Timeout
	ReasonInsecure    = "insecure"    // CheckRemote failed: no ask was sent
	ReasonRefused     = "refused"     // the grain refused (see Refused*)
	ReasonShortLived  = "short_lived" // the grain's token had under a second left, twice
)

// Reasons for a grain's refusal, for [Recorder.Refused].
const (
	RefusedInsecure    = "insecure_remote" // the cluster's remote may not carry tokens
	RefusedStaleConfig = "stale_config"    // the member's settings fingerprint differs
)

// recorder calls r's methods when r is not nil.
type recorder struct{ r Recorder }

func (m recorder) asked(identity string, local bool, took time.Duration, outcome string) {
	if m.r != nil {
		m.r.GrainAsked(identity, local, took, outcome)
	}
}

func (m recorder) fellBack(identity, reason string) {
	if m.r != nil {
		m.r.FellBack(identity, reason)
	}
}

func (m recorder) moved(identity string) {
	if m.r != nil {
		m.r.GrainMoved(identity)
	}
}

func (m recorder) refused(identity, reason string) {
	if m.r != nil {
		m.r.Refused(identity, reason)
	}
}
