//! The matching engine: one instrument's limit order book with price-time
//! priority.
//!
//! - A **limit** order trades against the opposite side while the best
//!   opposite price is at least as good as its limit (a buy takes asks at
//!   or below its price, a sell takes bids at or above it); whatever is
//!   left rests in the book at its limit price, behind the orders already
//!   resting at that price.
//! - A **market** order trades against the opposite side at any price
//!   until it is filled or the side is empty; what is left expires (it
//!   never rests).
//! - Every trade happens at the resting (maker) order's price. Within one
//!   price level the order that arrived first trades first.
//! - **Cancel** removes a resting order and reports what was left of it.
//!   Cancelling an order that is filled, already cancelled, an expired
//!   market order, or was never placed is an error saying which.
//!
//! Order ids are handed out in placement order (1, 2, 3, …). The engine
//! reads no clock, no randomness and iterates no hash map, so replicas that
//! place the same orders in the same order hold equal books and report
//! equal fills.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;

/// A price in ticks (an integer: no rounding, equal on every replica).
pub type Price = u64;
/// A quantity in lots.
pub type Quantity = u64;

/// Highest accepted price, ticks. With [`MAX_QUANTITY`] it keeps every
/// traded notional (price × quantity) far inside `u64`.
pub const MAX_PRICE: Price = 1_000_000_000;
/// Highest accepted quantity of one order, lots.
pub const MAX_QUANTITY: Quantity = 1_000_000_000;
/// Resting orders the book holds at most; a limit order placed while it
/// is full is refused, so a runaway client cannot exhaust a replica's
/// memory.
pub const MAX_OPEN_ORDERS: usize = 1_000_000;
/// Fills listed in one [`Placement`] (its `trades` counts them all): the
/// reply to a client stays short even when a market order sweeps the book.
pub const MAX_REPORTED_FILLS: usize = 32;

/// An order's id, assigned by the book in placement order from 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OrderId(pub u64);

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The side of an order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// Buys: trades against asks.
    Buy,
    /// Sells: trades against bids.
    Sell,
}

impl Side {
    /// `buy` or `sell`.
    pub fn name(self) -> &'static str {
        match self {
            Side::Buy => "buy",
            Side::Sell => "sell",
        }
    }
}

/// How an order is priced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrderKind {
    /// Trades at this price or better; the rest rests in the book.
    Limit(Price),
    /// Trades at any price; the rest expires.
    Market,
}

/// Where an order stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrderState {
    /// Resting in the book (possibly partly filled).
    Open,
    /// Completely filled.
    Filled,
    /// Cancelled on request while resting.
    Cancelled,
    /// A market order whose unfilled rest expired.
    Expired,
}

/// One trade of an incoming (taker) order against a resting (maker) one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fill {
    /// The resting order it traded against.
    pub maker: OrderId,
    /// The trade price: the maker's limit.
    pub price: Price,
    /// Lots traded.
    pub quantity: Quantity,
}

/// What placing an order did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// The id the book gave the order.
    pub id: OrderId,
    /// Lots traded on arrival.
    pub filled: Quantity,
    /// Lots left resting in the book (limit orders).
    pub resting: Quantity,
    /// Lots that expired unfilled (market orders).
    pub expired: Quantity,
    /// Number of trades on arrival.
    pub trades: u64,
    /// The first [`MAX_REPORTED_FILLS`] trades, in execution order.
    pub fills: Vec<Fill>,
}

/// Why the book refused an order or a cancel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BookError {
    /// Quantity 0 or above [`MAX_QUANTITY`].
    BadQuantity(Quantity),
    /// Price 0 or above [`MAX_PRICE`].
    BadPrice(Price),
    /// The book holds [`MAX_OPEN_ORDERS`] resting orders.
    BookFull,
    /// No order with this id was ever placed.
    UnknownOrder(OrderId),
    /// The order was completely filled: nothing is left to cancel.
    AlreadyFilled(OrderId),
    /// The order was cancelled before.
    AlreadyCancelled(OrderId),
    /// A market order: it never rests, its rest expired on arrival.
    Expired(OrderId),
}

impl fmt::Display for BookError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BookError::BadQuantity(q) => {
                write!(f, "bad quantity {q}: must be 1..={MAX_QUANTITY}")
            }
            BookError::BadPrice(p) => write!(f, "bad price {p}: must be 1..={MAX_PRICE}"),
            BookError::BookFull => write!(f, "book full: {MAX_OPEN_ORDERS} orders rest already"),
            BookError::UnknownOrder(id) => write!(f, "unknown order {id}"),
            BookError::AlreadyFilled(id) => write!(f, "order {id} is already filled"),
            BookError::AlreadyCancelled(id) => write!(f, "order {id} is already cancelled"),
            BookError::Expired(id) => {
                write!(
                    f,
                    "order {id} was a market order: its rest expired on arrival"
                )
            }
        }
    }
}

impl std::error::Error for BookError {}

/// Checks an order's quantity and price before it goes anywhere.
pub fn check_order(kind: OrderKind, quantity: Quantity) -> Result<(), BookError> {
    if quantity == 0 || quantity > MAX_QUANTITY {
        return Err(BookError::BadQuantity(quantity));
    }
    match kind {
        OrderKind::Limit(p) if p == 0 || p > MAX_PRICE => Err(BookError::BadPrice(p)),
        _ => Ok(()),
    }
}

/// A resting order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Resting {
    id: OrderId,
    remaining: Quantity,
}

/// The orders resting at one price, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Level {
    orders: VecDeque<Resting>,
    total: Quantity,
}

/// One instrument's limit order book.
#[derive(Clone, Debug, Default)]
pub struct Book {
    /// Bids by price; the best (highest) is the last.
    bids: BTreeMap<Price, Level>,
    /// Asks by price; the best (lowest) is the first.
    asks: BTreeMap<Price, Level>,
    /// Where each resting order is, for cancels. Only looked up, never
    /// iterated, so its order cannot leak into results.
    open: HashMap<OrderId, (Side, Price)>,
    /// Every placed order's state, indexed by id − 1 (one byte per order).
    states: Vec<OrderState>,
    trades: u64,
    volume: Quantity,
}

impl Book {
    /// An empty book.
    pub fn new() -> Self {
        Self::default()
    }

    /// Places an order of `quantity` lots; trades it against the opposite
    /// side and rests (limit) or expires (market) the rest.
    pub fn place(
        &mut self,
        side: Side,
        kind: OrderKind,
        quantity: Quantity,
    ) -> Result<Placement, BookError> {
        check_order(kind, quantity)?;
        if matches!(kind, OrderKind::Limit(_)) && self.open.len() >= MAX_OPEN_ORDERS {
            return Err(BookError::BookFull);
        }
        self.states.push(OrderState::Open);
        let id = OrderId(self.states.len() as u64);
        let limit = match kind {
            OrderKind::Limit(p) => Some(p),
            OrderKind::Market => None,
        };
        let mut p = Placement {
            id,
            filled: 0,
            resting: 0,
            expired: 0,
            trades: 0,
            fills: Vec::new(),
        };
        self.match_against(side, limit, quantity, &mut p);
        let left = quantity - p.filled;
        let state = match (left, limit) {
            (0, _) => OrderState::Filled,
            (_, None) => {
                p.expired = left;
                OrderState::Expired
            }
            (_, Some(price)) => {
                p.resting = left;
                self.rest(
                    side,
                    price,
                    Resting {
                        id,
                        remaining: left,
                    },
                );
                OrderState::Open
            }
        };
        self.states[Self::slot(id)] = state;
        Ok(p)
    }

    /// Trades up to `quantity` against the side opposite `side`, best price
    /// first, oldest order first within a price, stopping at `limit`.
    fn match_against(
        &mut self,
        side: Side,
        limit: Option<Price>,
        quantity: Quantity,
        p: &mut Placement,
    ) {
        while p.filled < quantity {
            let best = match side {
                Side::Buy => self.asks.first_entry(),
                Side::Sell => self.bids.last_entry(),
            };
            let Some(mut entry) = best else { break };
            let price = *entry.key();
            let crosses = match (side, limit) {
                (_, None) => true,
                (Side::Buy, Some(l)) => price <= l,
                (Side::Sell, Some(l)) => price >= l,
            };
            if !crosses {
                break;
            }
            let level = entry.get_mut();
            while p.filled < quantity {
                let Some(maker) = level.orders.front_mut() else {
                    break;
                };
                let take = maker.remaining.min(quantity - p.filled);
                maker.remaining -= take;
                level.total -= take;
                p.filled += take;
                p.trades += 1;
                self.trades += 1;
                self.volume += take;
                if p.fills.len() < MAX_REPORTED_FILLS {
                    p.fills.push(Fill {
                        maker: maker.id,
                        price,
                        quantity: take,
                    });
                }
                if maker.remaining == 0 {
                    let id = maker.id;
                    level.orders.pop_front();
                    self.open.remove(&id);
                    self.states[Self::slot(id)] = OrderState::Filled;
                }
            }
            if level.orders.is_empty() {
                entry.remove();
            }
        }
    }

    fn rest(&mut self, side: Side, price: Price, order: Resting) {
        let levels = match side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        };
        let level = levels.entry(price).or_default();
        level.total += order.remaining;
        level.orders.push_back(order);
        self.open.insert(order.id, (side, price));
    }

    /// Cancels resting order `id`; returns the lots that were left of it.
    pub fn cancel(&mut self, id: OrderId) -> Result<Quantity, BookError> {
        let Some((side, price)) = self.open.remove(&id) else {
            return Err(match self.state(id) {
                None => BookError::UnknownOrder(id),
                Some(OrderState::Filled) => BookError::AlreadyFilled(id),
                Some(OrderState::Cancelled) => BookError::AlreadyCancelled(id),
                Some(OrderState::Expired) => BookError::Expired(id),
                Some(OrderState::Open) => unreachable!("open order {id} missing from the index"),
            });
        };
        let levels = match side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        };
        let level = levels
            .get_mut(&price)
            .unwrap_or_else(|| panic!("order {id}'s level {price} is gone"));
        let at = level
            .orders
            .iter()
            .position(|o| o.id == id)
            .unwrap_or_else(|| panic!("order {id} is not at its level {price}"));
        let order = level.orders.remove(at).expect("position is in range");
        level.total -= order.remaining;
        if level.orders.is_empty() {
            levels.remove(&price);
        }
        self.states[Self::slot(id)] = OrderState::Cancelled;
        Ok(order.remaining)
    }

    fn slot(id: OrderId) -> usize {
        (id.0 - 1) as usize
    }

    /// The state of order `id`, `None` if it was never placed.
    pub fn state(&self, id: OrderId) -> Option<OrderState> {
        let i = id.0.checked_sub(1)?;
        self.states.get(usize::try_from(i).ok()?).copied()
    }

    /// Highest bid: (price, total lots).
    pub fn best_bid(&self) -> Option<(Price, Quantity)> {
        self.bids.last_key_value().map(|(p, l)| (*p, l.total))
    }

    /// Lowest ask: (price, total lots).
    pub fn best_ask(&self) -> Option<(Price, Quantity)> {
        self.asks.first_key_value().map(|(p, l)| (*p, l.total))
    }

    /// The price levels of `side`, best first: (price, total lots).
    pub fn depth(&self, side: Side) -> Vec<(Price, Quantity)> {
        let total = |(p, l): (&Price, &Level)| (*p, l.total);
        match side {
            Side::Buy => self.bids.iter().rev().map(total).collect(),
            Side::Sell => self.asks.iter().map(total).collect(),
        }
    }

    /// Orders placed so far.
    pub fn placed(&self) -> u64 {
        self.states.len() as u64
    }

    /// Orders resting now.
    pub fn open_orders(&self) -> usize {
        self.open.len()
    }

    /// Trades so far.
    pub fn trades(&self) -> u64 {
        self.trades
    }

    /// Lots traded so far.
    pub fn volume(&self) -> Quantity {
        self.volume
    }

    /// Writes the book in a canonical text form: a `book` summary line,
    /// then one `order <side> <price> <id> <remaining>` line per resting
    /// order, asks then bids, each best price first and in time priority
    /// within a price. Equal books give equal text.
    pub fn write_canonical(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = writeln!(
            out,
            "book placed {} open {} trades {} volume {}",
            self.placed(),
            self.open_orders(),
            self.trades,
            self.volume
        );
        let asks = self.asks.iter().map(|l| (Side::Sell, l));
        let bids = self.bids.iter().rev().map(|l| (Side::Buy, l));
        for (side, (price, level)) in asks.chain(bids) {
            for o in &level.orders {
                let _ = writeln!(
                    out,
                    "order {} {price} {} {}",
                    side.name(),
                    o.id,
                    o.remaining
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(book: &mut Book, side: Side, price: Price, qty: Quantity) -> Placement {
        book.place(side, OrderKind::Limit(price), qty)
            .expect("valid order")
    }

    fn fill(maker: u64, price: Price, quantity: Quantity) -> Fill {
        Fill {
            maker: OrderId(maker),
            price,
            quantity,
        }
    }

    #[test]
    fn non_crossing_orders_rest_and_ids_count_up() {
        let mut b = Book::new();
        let a = limit(&mut b, Side::Buy, 99, 10);
        let s = limit(&mut b, Side::Sell, 101, 5);
        assert_eq!((a.id, s.id), (OrderId(1), OrderId(2)));
        assert_eq!((a.filled, a.resting, a.trades), (0, 10, 0));
        assert_eq!(b.best_bid(), Some((99, 10)));
        assert_eq!(b.best_ask(), Some((101, 5)));
        assert_eq!(b.state(a.id), Some(OrderState::Open));
    }

    #[test]
    fn partial_fill_leaves_the_maker_resting_with_the_rest() {
        let mut b = Book::new();
        let maker = limit(&mut b, Side::Sell, 100, 10);
        let taker = limit(&mut b, Side::Buy, 100, 4);
        assert_eq!(taker.fills, vec![fill(1, 100, 4)]);
        assert_eq!((taker.filled, taker.resting), (4, 0));
        assert_eq!(b.state(taker.id), Some(OrderState::Filled));
        assert_eq!(b.state(maker.id), Some(OrderState::Open));
        assert_eq!(b.best_ask(), Some((100, 6)));
        assert_eq!(b.best_bid(), None);
    }

    #[test]
    fn partial_fill_of_the_taker_rests_its_rest_at_its_limit() {
        let mut b = Book::new();
        limit(&mut b, Side::Sell, 100, 3);
        let taker = limit(&mut b, Side::Buy, 102, 10);
        assert_eq!((taker.filled, taker.resting), (3, 7));
        assert_eq!(b.best_bid(), Some((102, 7)));
        assert_eq!(b.best_ask(), None);
        assert_eq!(b.state(OrderId(1)), Some(OrderState::Filled));
    }

    #[test]
    fn better_price_trades_first_then_the_older_order_at_a_price() {
        let mut b = Book::new();
        limit(&mut b, Side::Sell, 101, 5); // 1
        limit(&mut b, Side::Sell, 100, 5); // 2: better price, later
        limit(&mut b, Side::Sell, 101, 5); // 3: same price as 1, later
        let taker = limit(&mut b, Side::Buy, 101, 12);
        assert_eq!(
            taker.fills,
            vec![fill(2, 100, 5), fill(1, 101, 5), fill(3, 101, 2)]
        );
        assert_eq!(b.depth(Side::Sell), vec![(101, 3)]);
    }

    #[test]
    fn sells_take_the_highest_bids_first_at_the_makers_price() {
        let mut b = Book::new();
        limit(&mut b, Side::Buy, 98, 5); // 1
        limit(&mut b, Side::Buy, 99, 5); // 2
        let taker = limit(&mut b, Side::Sell, 97, 7);
        assert_eq!(taker.fills, vec![fill(2, 99, 5), fill(1, 98, 2)]);
        assert_eq!(b.depth(Side::Buy), vec![(98, 3)]);
    }

    #[test]
    fn a_limit_never_trades_beyond_its_price() {
        let mut b = Book::new();
        limit(&mut b, Side::Sell, 100, 5);
        limit(&mut b, Side::Sell, 103, 5);
        let taker = limit(&mut b, Side::Buy, 101, 8);
        assert_eq!(taker.fills, vec![fill(1, 100, 5)]);
        assert_eq!(b.depth(Side::Buy), vec![(101, 3)]);
        assert_eq!(b.depth(Side::Sell), vec![(103, 5)]);
    }

    #[test]
    fn market_order_against_an_empty_book_expires_whole() {
        let mut b = Book::new();
        let m = b.place(Side::Buy, OrderKind::Market, 10).unwrap();
        assert_eq!((m.filled, m.resting, m.expired, m.trades), (0, 0, 10, 0));
        assert_eq!(b.state(m.id), Some(OrderState::Expired));
        assert_eq!(b.open_orders(), 0);
        assert_eq!(b.cancel(m.id), Err(BookError::Expired(m.id)));
    }

    #[test]
    fn market_order_against_a_thin_book_takes_all_and_expires_the_rest() {
        let mut b = Book::new();
        limit(&mut b, Side::Buy, 90, 2);
        limit(&mut b, Side::Buy, 95, 3);
        let m = b.place(Side::Sell, OrderKind::Market, 10).unwrap();
        assert_eq!(m.fills, vec![fill(2, 95, 3), fill(1, 90, 2)]);
        assert_eq!((m.filled, m.expired), (5, 5));
        assert_eq!(b.best_bid(), None);
        assert_eq!(b.state(m.id), Some(OrderState::Expired));
    }

    #[test]
    fn market_order_filled_completely_is_filled() {
        let mut b = Book::new();
        limit(&mut b, Side::Sell, 100, 10);
        let m = b.place(Side::Buy, OrderKind::Market, 10).unwrap();
        assert_eq!((m.filled, m.expired), (10, 0));
        assert_eq!(b.state(m.id), Some(OrderState::Filled));
        assert_eq!(b.cancel(m.id), Err(BookError::AlreadyFilled(m.id)));
    }

    #[test]
    fn cancel_returns_the_rest_and_keeps_the_others_priority() {
        let mut b = Book::new();
        limit(&mut b, Side::Sell, 100, 5); // 1
        limit(&mut b, Side::Sell, 100, 5); // 2
        limit(&mut b, Side::Sell, 100, 5); // 3
        limit(&mut b, Side::Buy, 100, 2); // trades 2 of order 1
        assert_eq!(b.cancel(OrderId(1)), Ok(3));
        assert_eq!(b.state(OrderId(1)), Some(OrderState::Cancelled));
        let taker = limit(&mut b, Side::Buy, 100, 6);
        assert_eq!(taker.fills, vec![fill(2, 100, 5), fill(3, 100, 1)]);
        assert_eq!(b.best_ask(), Some((100, 4)));
    }

    #[test]
    fn cancel_of_the_last_order_at_a_price_removes_the_level() {
        let mut b = Book::new();
        limit(&mut b, Side::Buy, 100, 5);
        limit(&mut b, Side::Buy, 99, 5);
        assert_eq!(b.cancel(OrderId(1)), Ok(5));
        assert_eq!(b.depth(Side::Buy), vec![(99, 5)]);
    }

    #[test]
    fn cancel_errors_say_why() {
        let mut b = Book::new();
        limit(&mut b, Side::Sell, 100, 5); // 1
        limit(&mut b, Side::Buy, 100, 5); // 2 fills 1
        limit(&mut b, Side::Buy, 90, 5); // 3
        assert_eq!(
            b.cancel(OrderId(1)),
            Err(BookError::AlreadyFilled(OrderId(1)))
        );
        assert_eq!(b.cancel(OrderId(3)), Ok(5));
        assert_eq!(
            b.cancel(OrderId(3)),
            Err(BookError::AlreadyCancelled(OrderId(3)))
        );
        assert_eq!(
            b.cancel(OrderId(4)),
            Err(BookError::UnknownOrder(OrderId(4)))
        );
        assert_eq!(
            b.cancel(OrderId(0)),
            Err(BookError::UnknownOrder(OrderId(0)))
        );
        assert_eq!(
            BookError::AlreadyFilled(OrderId(1)).to_string(),
            "order 1 is already filled"
        );
        assert_eq!(
            BookError::UnknownOrder(OrderId(4)).to_string(),
            "unknown order 4"
        );
    }

    #[test]
    fn bad_quantities_and_prices_are_refused_and_take_no_id() {
        let mut b = Book::new();
        assert_eq!(
            b.place(Side::Buy, OrderKind::Limit(100), 0),
            Err(BookError::BadQuantity(0))
        );
        assert_eq!(
            b.place(Side::Buy, OrderKind::Market, MAX_QUANTITY + 1),
            Err(BookError::BadQuantity(MAX_QUANTITY + 1))
        );
        assert_eq!(
            b.place(Side::Sell, OrderKind::Limit(0), 1),
            Err(BookError::BadPrice(0))
        );
        assert_eq!(
            b.place(Side::Sell, OrderKind::Limit(MAX_PRICE + 1), 1),
            Err(BookError::BadPrice(MAX_PRICE + 1))
        );
        assert_eq!(b.placed(), 0);
        assert_eq!(
            limit(&mut b, Side::Buy, MAX_PRICE, MAX_QUANTITY).id,
            OrderId(1)
        );
    }

    #[test]
    fn reported_fills_are_capped_but_trades_are_counted() {
        let mut b = Book::new();
        let makers = MAX_REPORTED_FILLS as u64 + 8;
        for _ in 0..makers {
            limit(&mut b, Side::Sell, 100, 1);
        }
        let m = b.place(Side::Buy, OrderKind::Market, makers).unwrap();
        assert_eq!(m.trades, makers);
        assert_eq!(m.fills.len(), MAX_REPORTED_FILLS);
        assert_eq!(m.filled, makers);
        assert_eq!((b.trades(), b.volume()), (makers, makers));
    }

    #[test]
    fn same_orders_give_the_same_canonical_book() {
        let run = || {
            let mut b = Book::new();
            for i in 0..200u64 {
                let side = if i % 3 == 0 { Side::Sell } else { Side::Buy };
                let _ = b.place(side, OrderKind::Limit(95 + i * 7 % 11), 1 + i % 5);
                if i % 7 == 0 {
                    let _ = b.cancel(OrderId(i / 2 + 1));
                }
            }
            let mut s = String::new();
            b.write_canonical(&mut s);
            s
        };
        let a = run();
        assert_eq!(a, run());
        assert!(a.starts_with("book placed 200 "), "{a}");
        assert!(a.contains("\norder sell "), "{a}");
    }
}
