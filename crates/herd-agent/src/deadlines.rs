//! How long each side of an agent connection waits for the other: the agent's deadlines, and
//! the margins the client allows for them. Both sides use these, so they live apart from
//! either (the client must not depend on the agent, nor the agent on the client's internals).

use std::time::Duration;

/// How long a client has to finish the TLS handshake. A handshake is two round trips and
/// a few signatures (milliseconds, even across continents); the deadline is what an idle
/// stranger can hold a place of the handshake budget for.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a verified peer turned away for want of a slot has to send its request (it sends
/// it right after the handshake) and to take the answer.
pub const BUSY_GRACE: Duration = Duration::from_secs(1);
/// How long a client has to send its request after the handshake.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a write to a client may make no progress before the client is dropped.
pub const WRITE_STALL: Duration = Duration::from_secs(30);
/// After SIGTERM at a timeout, how long before SIGKILL.
pub const KILL_GRACE: Duration = Duration::from_secs(2);
/// After a signal from the client and the shell's exit, how long the output may stay open.
pub const INTERRUPT_GRACE: Duration = Duration::from_secs(1);
