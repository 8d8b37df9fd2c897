//! Why a session ended (or was refused), as the session log and the
//! recording say it.

use std::fmt;

/// How a session ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum EndReason {
    /// Still running (no end yet).
    #[default]
    Open,
    /// The client closed its connection.
    ClientDisconnect,
    /// Reading from or writing to the client failed.
    ClientIoError,
    /// The client said goodbye (Terminate).
    ClientTerminate,
    /// The client broke the protocol.
    ProtocolError,
    /// The client's TLS handshake failed.
    TlsFailed,
    /// Startup did not finish in time.
    HandshakeTimeout,
    /// A wrong token or an unknown user.
    AuthFailed,
    /// TLS was required for a password.
    TlsRequired,
    /// No target serves the database (or it was removed by a reload).
    NoTarget,
    /// The identity may not reach the target.
    NotAllowed,
    /// The target has no upstream account for the identity.
    NoAccount,
    /// Refused at startup (a startup parameter, a replication connection).
    Refused,
    /// The gateway is shutting down.
    Draining,
    /// Over `max_connections`.
    ConnectionLimit,
    /// The upstream could not be reached.
    UpstreamUnreachable,
    /// The upstream refused the gateway's credentials.
    UpstreamAuthFailed,
    /// The upstream refused the session (an ErrorResponse at login).
    UpstreamRefused,
    /// The upstream connection was lost.
    UpstreamLost,
    /// The upstream broke the protocol (or gatehouse lost track of it).
    UpstreamProtocolError,
    /// A value could not be scanned once part of it was out.
    ScanFailed,
    /// The session broke what the policy pins (a parameter changed).
    PolicyViolation,
    /// Ended by an administrator.
    Killed,
    /// Ended by the shutdown's deadline.
    Shutdown,
    /// Idle longer than allowed.
    IdleTimeout,
    /// A reload removed the identity, changed its token or its reach.
    Revoked,
    /// Recordings could not be written (`recording.on_failure = "refuse"`).
    RecordingFailed,
}

impl EndReason {
    /// Every reason, in declaration order (for counting by reason).
    pub const ALL: [EndReason; 27] = [
        EndReason::Open,
        EndReason::ClientDisconnect,
        EndReason::ClientIoError,
        EndReason::ClientTerminate,
        EndReason::ProtocolError,
        EndReason::TlsFailed,
        EndReason::HandshakeTimeout,
        EndReason::AuthFailed,
        EndReason::TlsRequired,
        EndReason::NoTarget,
        EndReason::NotAllowed,
        EndReason::NoAccount,
        EndReason::Refused,
        EndReason::Draining,
        EndReason::ConnectionLimit,
        EndReason::UpstreamUnreachable,
        EndReason::UpstreamAuthFailed,
        EndReason::UpstreamRefused,
        EndReason::UpstreamLost,
        EndReason::UpstreamProtocolError,
        EndReason::ScanFailed,
        EndReason::PolicyViolation,
        EndReason::Killed,
        EndReason::Shutdown,
        EndReason::IdleTimeout,
        EndReason::Revoked,
        EndReason::RecordingFailed,
    ];

    /// This reason's place in [`EndReason::ALL`] (a match, so that a new
    /// reason does not compile until it has a place).
    pub fn index(self) -> usize {
        match self {
            EndReason::Open => 0,
            EndReason::ClientDisconnect => 1,
            EndReason::ClientIoError => 2,
            EndReason::ClientTerminate => 3,
            EndReason::ProtocolError => 4,
            EndReason::TlsFailed => 5,
            EndReason::HandshakeTimeout => 6,
            EndReason::AuthFailed => 7,
            EndReason::TlsRequired => 8,
            EndReason::NoTarget => 9,
            EndReason::NotAllowed => 10,
            EndReason::NoAccount => 11,
            EndReason::Refused => 12,
            EndReason::Draining => 13,
            EndReason::ConnectionLimit => 14,
            EndReason::UpstreamUnreachable => 15,
            EndReason::UpstreamAuthFailed => 16,
            EndReason::UpstreamRefused => 17,
            EndReason::UpstreamLost => 18,
            EndReason::UpstreamProtocolError => 19,
            EndReason::ScanFailed => 20,
            EndReason::PolicyViolation => 21,
            EndReason::Killed => 22,
            EndReason::Shutdown => 23,
            EndReason::IdleTimeout => 24,
            EndReason::Revoked => 25,
            EndReason::RecordingFailed => 26,
        }
    }

    /// The name in logs and recordings.
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Open => "",
            EndReason::ClientDisconnect => "client-disconnect",
            EndReason::ClientIoError => "client-io-error",
            EndReason::ClientTerminate => "client-terminate",
            EndReason::ProtocolError => "protocol-error",
            EndReason::TlsFailed => "tls-failed",
            EndReason::HandshakeTimeout => "handshake-timeout",
            EndReason::AuthFailed => "auth-failed",
            EndReason::TlsRequired => "tls-required",
            EndReason::NoTarget => "no-target",
            EndReason::NotAllowed => "not-allowed",
            EndReason::NoAccount => "no-account",
            EndReason::Refused => "refused",
            EndReason::Draining => "draining",
            EndReason::ConnectionLimit => "connection-limit",
            EndReason::UpstreamUnreachable => "upstream-unreachable",
            EndReason::UpstreamAuthFailed => "upstream-auth-failed",
            EndReason::UpstreamRefused => "upstream-refused",
            EndReason::UpstreamLost => "upstream-lost",
            EndReason::UpstreamProtocolError => "upstream-protocol-error",
            EndReason::ScanFailed => "scan-failed",
            EndReason::PolicyViolation => "policy-violation",
            EndReason::Killed => "killed",
            EndReason::Shutdown => "shutdown",
            EndReason::IdleTimeout => "idle-timeout",
            EndReason::Revoked => "revoked",
            EndReason::RecordingFailed => "recording-failed",
        }
    }

    /// The client is gone: nothing can be said to it any more.
    pub fn client_gone(self) -> bool {
        matches!(
            self,
            EndReason::ClientDisconnect | EndReason::ClientIoError | EndReason::ClientTerminate
        )
    }
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::EndReason;

    #[test]
    fn all_lists_every_reason_at_its_index() {
        for (i, r) in EndReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i, "{r:?}");
        }
        let names: std::collections::HashSet<&str> = EndReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names.len(), EndReason::ALL.len(), "names are distinct");
    }
}
