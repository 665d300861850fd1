package tokenpb

// The messages carry tokens: protoactor must not log them when they end
// up as dead letters (a late reply to an ask that timed out, an ask to a
// grain that just stopped). This file is written by hand.

// IgnoreDeadLetterLogging keeps protoactor from logging the message.
func (*GetToken) IgnoreDeadLetterLogging() {}

// IgnoreDeadLetterLogging keeps protoactor from logging the message.
func (*TokenReply) IgnoreDeadLetterLogging() {}
