//! Command codes: the first byte of every message a client sends once the
//! connection is established (its sequence id is 0).

/// A client command, by its code. Codes gatehouse does not name are kept as
/// `Other` so the session can refuse them by number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    Sleep,
    Quit,
    InitDb,
    Query,
    FieldList,
    CreateDb,
    DropDb,
    Refresh,
    Shutdown,
    Statistics,
    ProcessInfo,
    Connect,
    ProcessKill,
    Debug,
    Ping,
    Time,
    DelayedInsert,
    ChangeUser,
    BinlogDump,
    TableDump,
    ConnectOut,
    RegisterSlave,
    StmtPrepare,
    StmtExecute,
    StmtSendLongData,
    StmtClose,
    StmtReset,
    SetOption,
    StmtFetch,
    Daemon,
    BinlogDumpGtid,
    ResetConnection,
    /// MariaDB: prepare and execute in one round trip.
    StmtBulkExecute,
    Other(u8),
}

impl Command {
    pub fn from_code(code: u8) -> Command {
        use Command::*;
        match code {
            0x00 => Sleep,
            0x01 => Quit,
            0x02 => InitDb,
            0x03 => Query,
            0x04 => FieldList,
            0x05 => CreateDb,
            0x06 => DropDb,
            0x07 => Refresh,
            0x08 => Shutdown,
            0x09 => Statistics,
            0x0a => ProcessInfo,
            0x0b => Connect,
            0x0c => ProcessKill,
            0x0d => Debug,
            0x0e => Ping,
            0x0f => Time,
            0x10 => DelayedInsert,
            0x11 => ChangeUser,
            0x12 => BinlogDump,
            0x13 => TableDump,
            0x14 => ConnectOut,
            0x15 => RegisterSlave,
            0x16 => StmtPrepare,
            0x17 => StmtExecute,
            0x18 => StmtSendLongData,
            0x19 => StmtClose,
            0x1a => StmtReset,
            0x1b => SetOption,
            0x1c => StmtFetch,
            0x1d => Daemon,
            0x1e => BinlogDumpGtid,
            0x1f => ResetConnection,
            0xfa => StmtBulkExecute,
            other => Other(other),
        }
    }

    pub fn code(self) -> u8 {
        use Command::*;
        match self {
            Sleep => 0x00,
            Quit => 0x01,
            InitDb => 0x02,
            Query => 0x03,
            FieldList => 0x04,
            CreateDb => 0x05,
            DropDb => 0x06,
            Refresh => 0x07,
            Shutdown => 0x08,
            Statistics => 0x09,
            ProcessInfo => 0x0a,
            Connect => 0x0b,
            ProcessKill => 0x0c,
            Debug => 0x0d,
            Ping => 0x0e,
            Time => 0x0f,
            DelayedInsert => 0x10,
            ChangeUser => 0x11,
            BinlogDump => 0x12,
            TableDump => 0x13,
            ConnectOut => 0x14,
            RegisterSlave => 0x15,
            StmtPrepare => 0x16,
            StmtExecute => 0x17,
            StmtSendLongData => 0x18,
            StmtClose => 0x19,
            StmtReset => 0x1a,
            SetOption => 0x1b,
            StmtFetch => 0x1c,
            Daemon => 0x1d,
            BinlogDumpGtid => 0x1e,
            ResetConnection => 0x1f,
            StmtBulkExecute => 0xfa,
            Other(c) => c,
        }
    }

    /// Commands a client gets no reply to (the server sends nothing back).
    pub fn has_no_reply(self) -> bool {
        matches!(self, Command::Quit | Command::StmtSendLongData | Command::StmtClose)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips() {
        for code in 0..=255u8 {
            assert_eq!(Command::from_code(code).code(), code);
        }
        assert_eq!(Command::from_code(3), Command::Query);
        assert_eq!(Command::from_code(0x22), Command::Other(0x22));
    }
}
