//! The periodic nudge of an actor (the supervisor's look at the deadline index, the board's
//! recomputation): one task per actor that asks it to tick and waits for the tick to finish, so
//! that ticks never pile up behind a slow one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ractor::{ActorRef, RpcReplyPort};

/// Starts a task that asks `actor` to tick (with the message `tick` builds) every `every`, until
/// `stop` is set or the actor is gone.
pub fn spawn_ticker<M, R>(
    actor: ActorRef<M>,
    every: Duration,
    stop: Arc<AtomicBool>,
    tick: fn(RpcReplyPort<R>) -> M,
) -> tokio::task::JoinHandle<()>
where
    M: ractor::Message,
    R: Send + 'static,
{
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            if stop.load(Ordering::Acquire) {
                return;
            }
            match actor.call(tick, None).await {
                Ok(ractor::rpc::CallResult::Success(_)) => {}
                _ => return,
            }
        }
    })
}
