//! A replicated limit order book: the Mu artifact's Liquibook experiment
//! (an order-matching engine whose order stream is replicated with Mu),
//! here with a matching engine of its own over `mu` used as a library.
//!
//! | module | what |
//! |---|---|
//! | [`book`] | the matching engine: price-time priority, limit and market orders, cancel, fills |
//! | [`exchange`] | the replicated state machine: log entry = (client, seq, operation); deduplication; digest |
//! | [`protocol`] | the client protocol's requests and replies (text lines) |
//! | [`server`] | one server: a Mu replica, the applier, the TCP front end (`orderbook-server`) |
//! | [`client`] | a session that follows the leader and resends until acknowledged (`orderbook-trader`) |
//!
//! # How an order flows
//!
//! A client sends an order to the server it believes leads. That server
//! proposes the order to Mu; once Mu committed it, every replica's applier
//! (the leader's included) applies it to its own book in log order, and
//! the leader answers the client with what the order did in its book.
//! A follower does not forward: it answers `NOTLEADER <id> <addr>` with
//! the id and order address of the replica it believes leads (Mu's
//! `ProposeError::NotLeader`), and the client moves there. Because all
//! replicas apply the same entries in the same order to a deterministic
//! engine, their books stay equal; `DIGEST` and `DUMP` show it.
//!
//! # Exactly once across a leader change
//!
//! An order can be committed while its answer is lost: the leader is
//! paused after replicating it, a reply times out, the new leader adopts
//! the old leader's last entry. The client cannot tell, so it resends;
//! the resend must not trade a second time. Hence:
//!
//! 1. Every order carries the client's id and a sequence number, and
//!    these travel *inside the replicated entry*.
//! 2. A client has at most one order outstanding: it sends order n+1 only
//!    after order n was acknowledged, and resends order n with the same
//!    number until then.
//! 3. On apply, each replica keeps per client the highest sequence number
//!    applied and its result. An entry with that number again is a
//!    duplicate: it does not touch the book, and its answer is the
//!    original result (same order id, same fills, same log index). A lower
//!    number is stale and ignored.
//!
//! The table is part of the replicated state, so every replica decides
//! the same. An acknowledged order is in the book exactly once, and an
//! order is acknowledged only after it was committed and applied. Two
//! clients must not share an id (`orderbook-trader` picks a random one
//! unless told); a client restarted under an old id must continue its
//! numbering, or its orders are refused as stale.
//!
//! # The client protocol
//!
//! TCP, one request per line, one reply line per request (`DUMP` replies
//! with several lines ending in `END`). Words are separated by spaces;
//! verbs and sides are case-insensitive; prices are integer ticks and
//! quantities integer lots, both 1..=10⁹. Lines are at most
//! [`protocol::MAX_REQUEST_LINE`] bytes.
//!
//! ```text
//! LIMIT  <client> <seq> <buy|sell> <quantity> <price>
//! MARKET <client> <seq> <buy|sell> <quantity>
//! CANCEL <client> <seq> <order-id>
//! STATUS          -> STATUS <node> <role> <leader|?> <applied-index>
//! DIGEST          -> DIGEST <node> <applied-index> <digest, 16 hex digits>
//! DUMP            -> DUMP <node> <applied-index> <digest>, the state lines, END
//! SHUTDOWN        -> BYE <node>; the server prints its final state and exits
//! ```
//!
//! Answers to `LIMIT`, `MARKET` and `CANCEL`:
//!
//! ```text
//! OK <node> <index> PLACED <order-id> <filled> <resting> <expired> <trades> [<maker>@<price>x<qty> ...]
//! OK <node> <index> CANCELLED <order-id> <quantity-left>
//! OK <node> <index> REJECTED <reason>       sequenced, changed nothing (e.g. unknown order 7)
//! NOTLEADER <id> <addr>                     not the leader; the leader is <id>, orders at <addr>
//! NOTLEADER ? -                             not the leader; no leader known yet
//! RETRY <reason>                            not known to be done: send the same line again
//! UNAVAILABLE <reason>                      this server cannot serve: try another
//! ERR <reason>                              bad request (or a stale sequence number)
//! ```
//!
//! `OK` means done exactly once: `<node>` answered, `<index>` is the log
//! index where the order took effect. A placement lists at most
//! [`book::MAX_REPORTED_FILLS`] fills (`<trades>` counts all). A server
//! accepts at most [`server::MAX_CONNECTIONS`] connections.
//!
//! ```text
//! $ printf 'LIMIT 7 1 sell 10 100\nLIMIT 8 1 buy 4 101\nCANCEL 7 2 1\nCANCEL 7 3 1\nLIMIT 7 4 buy 0 1\n' \
//!     | nc -q1 127.0.0.1 7001          # a fresh group, server 1 leads
//! OK 1 1 PLACED 1 0 10 0 0
//! OK 1 2 PLACED 2 4 0 0 1 1@100x4
//! OK 1 3 CANCELLED 1 6
//! OK 1 4 REJECTED order 1 is already cancelled
//! ERR bad quantity 0: must be 1..=1000000000
//! ```
//!
//! # Running the experiment
//!
//! ```text
//! orderbook-server --launch 1 --fabric shm --order-addrs 127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003
//! orderbook-trader --servers 127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003 --duration-secs 10 --check-replicas
//! mu-pause 1 p                         # during the run: prints "Leader changed to 2: X (us)"
//! ```

pub mod book;
pub mod client;
pub mod exchange;
pub mod protocol;
pub mod server;
