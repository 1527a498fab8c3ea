//! Stops carried between replicas over Redis pub/sub: a stop asked of any replica reaches the
//! one that runs the answer, which cancels its upstream call at once. Every replica listens on
//! one channel; a message names its sender (which handled it already) and its target. A stop
//! is delivered to this process directly and published for the others; while Redis does not
//! answer, stops reach this process only, and listening resumes when it answers again.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::StreamExt;
use redis::aio::ConnectionManager;
use uuid::Uuid;

use super::seams::{StopHandler, StopSignal, StopTarget};

const CHANNEL: &str = "sluice:stops";

pub struct RedisStops {
    me: Uuid,
    client: redis::Client,
    publisher: ConnectionManager,
    handler: Arc<OnceLock<StopHandler>>,
}

impl RedisStops {
    pub fn new(url: &str, me: Uuid) -> Result<Self, String> {
        let (client, publisher) = crate::policy::connect_redis(url, Duration::from_secs(1))?;
        Ok(Self {
            me,
            client,
            publisher,
            handler: Arc::new(OnceLock::new()),
        })
    }
}

fn encode(sender: Uuid, target: StopTarget) -> String {
    match target {
        StopTarget::Chat(id) => format!("{sender} chat {id}"),
        StopTarget::Question(id) => format!("{sender} question {id}"),
    }
}

fn decode(payload: &str) -> Option<(Uuid, StopTarget)> {
    let mut parts = payload.split(' ');
    let sender = parts.next()?.parse().ok()?;
    let kind = parts.next()?;
    let id = parts.next()?.parse().ok()?;
    let target = match kind {
        "chat" => StopTarget::Chat(id),
        "question" => StopTarget::Question(id),
        _ => return None,
    };
    Some((sender, target))
}

impl StopSignal for RedisStops {
    fn send(&self, target: StopTarget) {
        if let Some(handler) = self.handler.get() {
            handler(target);
        }
        let mut redis = self.publisher.clone();
        let message = encode(self.me, target);
        tokio::spawn(async move {
            let sent: redis::RedisResult<i64> = redis::cmd("PUBLISH")
                .arg(CHANNEL)
                .arg(message)
                .query_async(&mut redis)
                .await;
            if let Err(error) = sent {
                tracing::warn!(%error, "a stop could not be sent to the other replicas");
            }
        });
    }

    fn listen(&self, handler: StopHandler) {
        if self.handler.set(handler).is_err() {
            tracing::warn!("a second stop handler was refused");
            return;
        }
        let (client, handler, me) = (self.client.clone(), self.handler.clone(), self.me);
        tokio::spawn(async move {
            let mut failing = false;
            loop {
                let subscribed = async {
                    let mut pubsub = client.get_async_pubsub().await?;
                    pubsub.subscribe(CHANNEL).await?;
                    Ok::<_, redis::RedisError>(pubsub)
                }
                .await;
                match subscribed {
                    Ok(pubsub) => {
                        if failing {
                            tracing::info!("Redis answers again: stops reach every replica");
                            failing = false;
                        }
                        let mut messages = pubsub.into_on_message();
                        while let Some(message) = messages.next().await {
                            let Ok(payload) = message.get_payload::<String>() else {
                                continue;
                            };
                            if let (Some((sender, target)), Some(handler)) =
                                (decode(&payload), handler.get())
                                && sender != me
                            {
                                handler(target);
                            }
                        }
                    }
                    Err(error) => {
                        if !failing {
                            tracing::warn!(
                                %error,
                                "cannot listen for stops on Redis: stops reach this replica \
                                 only until it answers"
                            );
                            failing = true;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }

    fn shared(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stops_travel_with_their_sender_and_target() {
        let (me, id) = (Uuid::new_v4(), Uuid::new_v4());
        for target in [StopTarget::Chat(id), StopTarget::Question(id)] {
            assert_eq!(decode(&encode(me, target)), Some((me, target)));
        }
        assert_eq!(decode("garbage"), None);
        assert_eq!(decode(&format!("{me} table {id}")), None);
    }
}
