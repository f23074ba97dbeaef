//! Publish/subscribe topics and the filters that select them: `Topic`, `Filter`, and
//! `FilterTree`, the index that finds every subscriber of a published topic.
//!
//! Invariant: a `Topic` is always 1 to [`TOPIC_TOKENS_MAX`] dot-separated tokens of
//! `[A-Za-z0-9_-]`, [`TOPIC_BYTES_MAX`] bytes at most; a `Filter` is the same except that a
//! token may also be exactly `*` (one token) or, as the last token only, exactly `>` (one or
//! more tokens). Code that holds one never re-checks it, and since a wildcard is always a
//! whole token, matching compares tokens and never looks inside them. Like names, both are
//! compared and ordered byte-wise, and `FilterTree` keeps its branches in ordered maps, so
//! nothing here depends on hash seeds.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest topic or filter, in bytes, dots included.
pub const TOPIC_BYTES_MAX: usize = 255;

/// The most tokens a topic or a filter may have.
pub const TOPIC_TOKENS_MAX: usize = 16;

/// How much of an over-long input an error quotes: enough to recognise it, while a client's
/// megabyte of garbage is not copied into every log line that reports it.
const QUOTED_BYTES_MAX: usize = 32;

/// Why a string is not a valid topic or filter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// The string is empty.
    #[error(
        "a {kind} cannot be empty; it is one or more tokens separated by dots, such as `prices.eu`"
    )]
    Empty {
        /// What was being parsed ("topic" or "filter").
        kind: &'static str,
    },
    /// The string is longer than [`TOPIC_BYTES_MAX`].
    #[error("{kind} `{input}…` is {length} bytes long; the limit is {TOPIC_BYTES_MAX}")]
    TooLong {
        /// What was being parsed.
        kind: &'static str,
        /// The first bytes of the string.
        input: String,
        /// Its length in bytes.
        length: usize,
    },
    /// The string has more than [`TOPIC_TOKENS_MAX`] tokens.
    #[error("{kind} `{input}` has {count} tokens; the limit is {TOPIC_TOKENS_MAX}")]
    TooManyTokens {
        /// What was being parsed.
        kind: &'static str,
        /// The whole string.
        input: String,
        /// How many tokens it has.
        count: usize,
    },
    /// A token is empty: the string starts or ends with a dot, or holds two in a row.
    #[error(
        "{kind} `{input}` has an empty token at position {position}; tokens are separated by single dots"
    )]
    EmptyToken {
        /// What was being parsed.
        kind: &'static str,
        /// The whole string.
        input: String,
        /// The empty token's position, counted from 1.
        position: usize,
    },
    /// A token holds a character outside `[A-Za-z0-9_-]` that is not a wildcard.
    #[error("{kind} `{input}` contains {character:?}; {}", allowed(kind))]
    BadCharacter {
        /// What was being parsed.
        kind: &'static str,
        /// The whole string.
        input: String,
        /// The first character that is not allowed.
        character: char,
    },
    /// A topic holds `*` or `>`.
    #[error(
        "topic `{input}` contains `{wildcard}`, but a topic cannot hold wildcards; wildcards are for filters"
    )]
    WildcardInTopic {
        /// The whole topic.
        input: String,
        /// The first wildcard in it.
        wildcard: char,
    },
    /// A filter's token mixes `*` or `>` with other characters.
    #[error(
        "filter `{input}` has the token `{token}`; a wildcard (`*` or `>`) must be a whole token on its own"
    )]
    BadWildcard {
        /// The whole filter.
        input: String,
        /// The offending token.
        token: String,
    },
    /// A filter has `>` before its last token.
    #[error(
        "filter `{input}` has `>` at position {position}, but `>` stands for all the remaining tokens and may only be the last token"
    )]
    TrailingNotLast {
        /// The whole filter.
        input: String,
        /// The position of the `>`, counted from 1.
        position: usize,
    },
}

const TOPIC: &str = "topic";
const FILTER: &str = "filter";

fn allowed(kind: &str) -> &'static str {
    if kind == FILTER {
        "tokens use only A-Z a-z 0-9 _ -, or are exactly `*` or `>`"
    } else {
        "tokens use only A-Z a-z 0-9 _ -"
    }
}

fn is_token_character(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-')
}

fn quoted_prefix(input: &str) -> String {
    let mut end = QUOTED_BYTES_MAX.min(input.len());
    while !input.is_char_boundary(end) {
        end -= 1;
    }
    input[..end].to_owned()
}

/// Checks `input` as a filter if `wildcards`, else as a topic.
fn validate(input: &str, wildcards: bool) -> Result<(), TopicError> {
    let kind = if wildcards { FILTER } else { TOPIC };
    if input.is_empty() {
        return Err(TopicError::Empty { kind });
    }
    // Length first: it bounds what every later error copies.
    if input.len() > TOPIC_BYTES_MAX {
        return Err(TopicError::TooLong {
            kind,
            input: quoted_prefix(input),
            length: input.len(),
        });
    }
    let count = input.split('.').count();
    if count > TOPIC_TOKENS_MAX {
        return Err(TopicError::TooManyTokens {
            kind,
            input: input.to_owned(),
            count,
        });
    }
    for (index, token) in input.split('.').enumerate() {
        let position = index + 1;
        if token.is_empty() {
            return Err(TopicError::EmptyToken {
                kind,
                input: input.to_owned(),
                position,
            });
        }
        let Some(character) = token.chars().find(|&c| !is_token_character(c)) else {
            continue;
        };
        let input = || input.to_owned();
        return Err(match character {
            '*' | '>' if !wildcards => TopicError::WildcardInTopic {
                input: input(),
                wildcard: character,
            },
            '*' | '>' if token.len() > 1 => TopicError::BadWildcard {
                input: input(),
                token: token.to_owned(),
            },
            '>' if position < count => TopicError::TrailingNotLast {
                input: input(),
                position,
            },
            '*' | '>' => continue,
            _ => TopicError::BadCharacter {
                kind,
                input: input(),
                character,
            },
        });
    }
    Ok(())
}

/// A filter's token, told apart once so matching never compares against `"*"` twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token<'a> {
    Literal(&'a str),
    /// `*`: exactly one token.
    One,
    /// `>`: one or more tokens, always the filter's last.
    Rest,
}

fn classify(token: &str) -> Token<'_> {
    match token {
        "*" => Token::One,
        ">" => Token::Rest,
        literal => Token::Literal(literal),
    }
}

macro_rules! topic_type {
    ($(#[$doc:meta])* $type:ident, $wildcards:literal) => {
        $(#[$doc])*
        ///
        /// Shared, not copied, when cloned: topics travel with every published message.
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $type(Arc<str>);

        impl $type {
            /// Checks `text` against the syntax.
            pub fn new(text: impl Into<String>) -> Result<Self, TopicError> {
                let text = text.into();
                validate(&text, $wildcards)?;
                Ok(Self(Arc::from(text)))
            }

            /// The whole string, dots included.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The tokens, in order; never empty, and none of them is empty.
            pub fn tokens(&self) -> impl DoubleEndedIterator<Item = &str> + Clone {
                self.0.split('.')
            }
        }

        impl FromStr for $type {
            type Err = TopicError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }

        impl fmt::Display for $type {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $type {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $type {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl Serialize for $type {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $type {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                Self::new(text).map_err(serde::de::Error::custom)
            }
        }
    };
}

topic_type!(
    /// What a message is published to, such as `prices.eu.btc`.
    Topic,
    false
);
topic_type!(
    /// What a subscriber asks for: a topic whose tokens may also be `*` (any one token) or,
    /// last, `>` (one or more tokens), such as `prices.*.btc` or `prices.>`.
    Filter,
    true
);

impl Filter {
    /// The filter that matches `topic` and nothing else.
    pub fn from_topic(topic: &Topic) -> Self {
        Self(Arc::clone(&topic.0))
    }

    /// Whether the filter has no wildcard, and so matches exactly one topic.
    pub fn is_literal(&self) -> bool {
        // Validation keeps wildcards whole tokens, so a character search finds only tokens.
        !self.0.contains(['*', '>'])
    }

    /// Whether the filter selects `topic`.
    pub fn matches(&self, topic: &Topic) -> bool {
        let mut topic_tokens = topic.tokens();
        for token in self.tokens() {
            let Some(topic_token) = topic_tokens.next() else {
                return false;
            };
            match classify(token) {
                Token::Rest => return true,
                Token::One => {}
                Token::Literal(literal) if literal == topic_token => {}
                Token::Literal(_) => return false,
            }
        }
        topic_tokens.next().is_none()
    }

    /// Whether every topic that `other` matches is also matched by `self`, so that a
    /// subscription to `other` beside one to `self` is redundant.
    ///
    /// Exact, because each filter matches a product of per-position token sets (`>` one
    /// set that repeats to any length): one product holds another exactly when it does
    /// position by position, none of the sets being empty. A literal never holds `*`, since
    /// there is always another token than that literal.
    pub fn covers(&self, other: &Filter) -> bool {
        let mut others = other.tokens().map(classify);
        for token in self.tokens().map(classify) {
            let Some(other_token) = others.next() else {
                // `other` stops here, while `self` needs one token more.
                return false;
            };
            match (token, other_token) {
                (Token::Rest, _) => return true,
                // `other` goes on, at this length or any longer one, where `self` cannot.
                (_, Token::Rest) => return false,
                (Token::One, _) => {}
                (Token::Literal(a), Token::Literal(b)) if a == b => {}
                (Token::Literal(_), _) => return false,
            }
        }
        others.next().is_none()
    }
}

/// A token trie from filters to the values subscribed under them, say the subscriptions of
/// a manager's clients. A value may be stored under several filters, and a filter may hold
/// several values.
///
/// Finding a topic's values costs the topic's tokens times the branches that match them,
/// not the number of filters: each node has one branch per literal token, one for `*`, and
/// holds the values of the filters that end at it, or continue with `>`.
#[derive(Debug, Clone)]
pub struct FilterTree<V> {
    root: Node<V>,
    /// The number of (filter, value) pairs.
    len: usize,
}

#[derive(Debug, Clone)]
struct Node<V> {
    literals: BTreeMap<Box<str>, Node<V>>,
    one: Option<Box<Node<V>>>,
    /// Values of the filters that end at this node.
    exact: BTreeSet<V>,
    /// Values of the filters that continue with `>` after this node.
    rest: BTreeSet<V>,
}

impl<V> Default for Node<V> {
    fn default() -> Self {
        Self {
            literals: BTreeMap::new(),
            one: None,
            exact: BTreeSet::new(),
            rest: BTreeSet::new(),
        }
    }
}

impl<V: Ord + Clone> Node<V> {
    fn is_empty(&self) -> bool {
        self.literals.is_empty()
            && self.one.is_none()
            && self.exact.is_empty()
            && self.rest.is_empty()
    }

    /// The set of `filter`'s values, its path created as needed.
    fn values_mut(&mut self, filter: &Filter) -> &mut BTreeSet<V> {
        let mut node = self;
        for token in filter.tokens() {
            node = match classify(token) {
                Token::Rest => return &mut node.rest,
                Token::One => node.one.get_or_insert_with(Box::default),
                Token::Literal(literal) => node.literals.entry(literal.into()).or_default(),
            };
        }
        &mut node.exact
    }

    /// Removes `value` from the filter whose remaining tokens are `tokens`, and every node
    /// left empty below this one, so that the tree's size follows its live filters.
    fn remove<'a>(&mut self, mut tokens: impl Iterator<Item = &'a str>, value: &V) -> bool {
        let Some(token) = tokens.next() else {
            return self.exact.remove(value);
        };
        match classify(token) {
            Token::Rest => self.rest.remove(value),
            Token::One => {
                let Some(child) = self.one.as_deref_mut() else {
                    return false;
                };
                let removed = child.remove(tokens, value);
                if child.is_empty() {
                    self.one = None;
                }
                removed
            }
            Token::Literal(literal) => {
                let Some(child) = self.literals.get_mut(literal) else {
                    return false;
                };
                let removed = child.remove(tokens, value);
                if child.is_empty() {
                    self.literals.remove(literal);
                }
                removed
            }
        }
    }

    /// Adds the values of the filters below this node that match `remaining`, the topic's
    /// tokens after this node's (`None` once they are used up).
    fn collect(&self, remaining: Option<&str>, out: &mut BTreeSet<V>) {
        let Some(remaining) = remaining else {
            out.extend(self.exact.iter().cloned());
            return;
        };
        out.extend(self.rest.iter().cloned());
        let (token, after) = remaining
            .split_once('.')
            .map_or((remaining, None), |(token, after)| (token, Some(after)));
        if let Some(child) = self.literals.get(token) {
            child.collect(after, out);
        }
        if let Some(child) = &self.one {
            child.collect(after, out);
        }
    }
}

impl<V> Default for FilterTree<V> {
    fn default() -> Self {
        Self {
            root: Node::default(),
            len: 0,
        }
    }
}

impl<V: Ord + Clone> FilterTree<V> {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of (filter, value) pairs stored.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no pair is stored.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Stores `value` under `filter`; false if it was already there.
    pub fn insert(&mut self, filter: &Filter, value: V) -> bool {
        let added = self.root.values_mut(filter).insert(value);
        self.len += usize::from(added);
        added
    }

    /// Removes `value` from under `filter`, and the branches that no longer lead to a value;
    /// false if it was not there.
    pub fn remove(&mut self, filter: &Filter, value: &V) -> bool {
        let removed = self.root.remove(filter.tokens(), value);
        self.len -= usize::from(removed);
        removed
    }

    /// Every value stored under at least one filter that matches `topic`, each once.
    pub fn matching(&self, topic: &Topic) -> BTreeSet<V> {
        let mut out = BTreeSet::new();
        self.matching_into(topic, &mut out);
        out
    }

    /// Adds to `out` what [`matching`](Self::matching) returns. `out` is not cleared first,
    /// so a caller can gather the values of several topics into one set.
    pub fn matching_into(&self, topic: &Topic, out: &mut BTreeSet<V>) {
        self.root.collect(Some(topic.as_str()), out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn topic(text: &str) -> Topic {
        Topic::new(text).unwrap()
    }

    fn filter(text: &str) -> Filter {
        Filter::new(text).unwrap()
    }

    fn message(result: Result<impl fmt::Debug, TopicError>) -> String {
        result.unwrap_err().to_string()
    }

    #[test]
    fn topic_accepts_the_syntax() {
        let longest = vec!["x".repeat(15); TOPIC_TOKENS_MAX].join(".");
        assert_eq!(longest.len(), TOPIC_BYTES_MAX);
        for text in ["a", "prices.eu.btc", "Node-1.eu_west", &longest] {
            assert_eq!(topic(text).as_str(), text);
            assert_eq!(filter(text).as_str(), text);
            assert!(filter(text).is_literal());
        }
        for text in [">", "*", "a.*", "*.b.>", "a.*.>"] {
            assert_eq!(filter(text).to_string(), text);
            assert!(!filter(text).is_literal());
        }
        let parsed: Filter = "a.*.c".parse().unwrap();
        assert_eq!(parsed.tokens().collect::<Vec<_>>(), ["a", "*", "c"]);
        assert_eq!(topic("a.b").tokens().rev().collect::<Vec<_>>(), ["b", "a"]);
        assert_eq!(Filter::from_topic(&topic("a.b")), filter("a.b"));
        // Byte-wise, like names: upper case before lower, `-` before letters.
        assert!(
            topic("B") < topic("a") && topic("a-") < topic("a.b") && topic("a.b") < topic("aa")
        );
    }

    /// Each error quotes its input, so a case is only the message: the input is what the first
    /// backticks hold, parsed as the kind the message starts with.
    const REFUSALS: [&str; 15] = [
        "topic `a..b` has an empty token at position 2; tokens are separated by single dots",
        "topic `.a` has an empty token at position 1; tokens are separated by single dots",
        "topic `a.b.` has an empty token at position 3; tokens are separated by single dots",
        "topic `a.b c` contains ' '; tokens use only A-Z a-z 0-9 _ -",
        "topic `a.é` contains 'é'; tokens use only A-Z a-z 0-9 _ -",
        "topic `a.*` contains `*`, but a topic cannot hold wildcards; wildcards are for filters",
        "topic `a>` contains `>`, but a topic cannot hold wildcards; wildcards are for filters",
        "filter `a..>` has an empty token at position 2; tokens are separated by single dots",
        "filter `a.b/c` contains '/'; tokens use only A-Z a-z 0-9 _ -, or are exactly `*` or `>`",
        "filter `a.*b` has the token `*b`; a wildcard (`*` or `>`) must be a whole token on its own",
        "filter `a>` has the token `a>`; a wildcard (`*` or `>`) must be a whole token on its own",
        "filter `**` has the token `**`; a wildcard (`*` or `>`) must be a whole token on its own",
        "filter `a.>.b` has `>` at position 2, but `>` stands for all the remaining tokens and may only be the last token",
        "filter `>.>` has `>` at position 1, but `>` stands for all the remaining tokens and may only be the last token",
        "filter `*.>.*` has `>` at position 2, but `>` stands for all the remaining tokens and may only be the last token",
    ];

    #[test]
    fn topic_errors_name_the_input() {
        for expected in REFUSALS {
            let input = expected.split('`').nth(1).unwrap();
            let refused = if expected.starts_with("topic") {
                message(Topic::new(input))
            } else {
                message(Filter::new(input))
            };
            assert_eq!(refused, expected);
        }
        let empty =
            "cannot be empty; it is one or more tokens separated by dots, such as `prices.eu`";
        assert_eq!(message(Topic::new("")), format!("a topic {empty}"));
        assert_eq!(message(Filter::new("")), format!("a filter {empty}"));
        // Cut at a character boundary, not in the middle of the `é`.
        let long = format!("{}é", "x".repeat(31)).repeat(8);
        let cut = TopicError::TooLong {
            kind: "topic",
            input: "x".repeat(31),
            length: 8 * 33,
        };
        assert_eq!(Topic::new(long.as_str()), Err(cut));
        let long = "y".repeat(300);
        let quoted = &long[..32];
        let expected = format!("filter `{quoted}…` is 300 bytes long; the limit is 255");
        assert_eq!(message(Filter::new(long)), expected);
        let many = ["*"; TOPIC_TOKENS_MAX + 1].join(".");
        let expected = format!("filter `{many}` has 17 tokens; the limit is 16");
        assert_eq!(message(Filter::new(many.as_str())), expected);
    }

    #[test]
    fn topic_matching_table() {
        let topics = ["a", "b", "a.b", "a.c", "b.b", "a.b.c"];
        // Each filter's row: whether it matches each topic above, in order.
        let table: [(&str, [bool; 6]); 8] = [
            ("a", [true, false, false, false, false, false]),
            ("a.b", [false, false, true, false, false, false]),
            ("a.*", [false, false, true, true, false, false]),
            ("a.>", [false, false, true, true, false, true]),
            ("*.b", [false, false, true, false, true, false]),
            ("*", [true, true, false, false, false, false]),
            (">", [true, true, true, true, true, true]),
            ("*.*.>", [false, false, false, false, false, true]),
        ];
        for (text, row) in table {
            for (t, expected) in topics.iter().zip(row) {
                assert_eq!(filter(text).matches(&topic(t)), expected, "{text} vs {t}");
            }
        }
    }

    #[test]
    fn topic_covers_examples() {
        let yes = "a.>:a.* a.>:a.b.c a.>:a.> *.b:a.b >:* a.*:a.* *.*:a.b a.*.>:a.b.*.> a.>:a.*.>";
        let no = "a.*:a.> a.b:a.* a.>:a a:a.> *:> a.*.>:a.> a.b:a.b.c a.b.c:a.b b.>:a.>";
        let pairs = |list: &'static str| list.split(' ').map(|p| p.split_once(':').unwrap());
        for (a, b) in pairs(yes) {
            assert!(filter(a).covers(&filter(b)), "{a} covers {b}");
        }
        for (a, b) in pairs(no) {
            assert!(!filter(a).covers(&filter(b)), "{a} does not cover {b}");
        }
    }

    #[test]
    fn topic_tree_stores_pairs_and_prunes() {
        let mut tree = FilterTree::new();
        assert!(tree.is_empty());
        assert!(tree.insert(&filter("a.*"), 1));
        assert!(tree.insert(&filter("a.>"), 1));
        assert!(tree.insert(&filter("a.>"), 2));
        assert!(!tree.insert(&filter("a.>"), 2));
        assert!(tree.insert(&filter("a.b"), 3));
        assert_eq!(tree.len(), 4);
        assert_eq!(tree.matching(&topic("a.b")), BTreeSet::from([1, 2, 3]));
        assert_eq!(tree.matching(&topic("a.b.c")), BTreeSet::from([1, 2]));
        assert!(tree.matching(&topic("a")).is_empty());
        let mut gathered = BTreeSet::from([9]);
        tree.matching_into(&topic("a.c"), &mut gathered);
        assert_eq!(gathered, BTreeSet::from([1, 2, 9]));
        assert!(!tree.remove(&filter("a.*"), &2));
        assert!(!tree.remove(&filter("x.*"), &1));
        assert!(tree.remove(&filter("a.*"), &1));
        assert!(tree.remove(&filter("a.>"), &1));
        assert!(tree.remove(&filter("a.>"), &2));
        assert!(tree.remove(&filter("a.b"), &3));
        assert!(tree.is_empty());
        assert!(tree.root.is_empty());
    }

    #[test]
    fn topic_deserializing_validates() {
        use serde::de::IntoDeserializer;
        use serde::de::value::{Error, StrDeserializer};
        fn text(s: &str) -> StrDeserializer<'_, Error> {
            s.into_deserializer()
        }
        assert_eq!(Topic::deserialize(text("a.b")).unwrap(), topic("a.b"));
        assert_eq!(Filter::deserialize(text("a.>")).unwrap(), filter("a.>"));
        let refused = Topic::deserialize(text("a.>")).unwrap_err().to_string();
        assert!(refused.contains("cannot hold wildcards"), "{refused}");
        assert!(Filter::deserialize(text("a..b")).is_err());
    }

    #[cfg(feature = "topology")]
    #[test]
    fn topic_and_filter_survive_serde_as_strings() {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct Subscription {
            topic: Topic,
            filter: Filter,
        }
        let subscription = Subscription {
            topic: topic("prices.eu"),
            filter: filter("prices.*.>"),
        };
        let text = toml::to_string(&subscription).unwrap();
        assert_eq!(text, "topic = \"prices.eu\"\nfilter = \"prices.*.>\"\n");
        assert_eq!(toml::from_str::<Subscription>(&text).unwrap(), subscription);
        let bad = toml::from_str::<Subscription>("topic = \"a.*\"\nfilter = \"a\"\n");
        let bad = bad.unwrap_err().to_string();
        assert!(bad.contains("topic `a.*` contains `*`"), "{bad}");
    }

    const LETTERS: [&str; 3] = ["a", "b", "c"];

    /// Every dotted string of 1 to `length` tokens from `tokens`, shortest first.
    fn sequences(tokens: &[&str], length: usize) -> Vec<String> {
        let mut level: Vec<String> = tokens.iter().map(|&t| t.to_owned()).collect();
        let mut all = Vec::new();
        for _ in 0..length {
            let next = (level.iter())
                .flat_map(|s| tokens.iter().map(move |t| format!("{s}.{t}")))
                .collect();
            all.append(&mut level);
            level = next;
        }
        all
    }

    /// Every topic of 1 to `tokens` tokens over `LETTERS`: with filters of at most one token
    /// fewer, enough to tell any two filters apart.
    fn all_topics(tokens: usize) -> Vec<Topic> {
        sequences(&LETTERS, tokens)
            .iter()
            .map(|t| topic(t))
            .collect()
    }

    fn brute_covers(a: &Filter, b: &Filter, topics: &[Topic]) -> bool {
        topics.iter().all(|t| !b.matches(t) || a.matches(t))
    }

    /// Filters of 1 to 4 tokens over `LETTERS` and `*`, the last token `>` half the time.
    fn any_filter() -> impl Strategy<Value = Filter> {
        let token = prop_oneof![Just("a"), Just("b"), Just("c"), Just("*")];
        (proptest::collection::vec(token, 1..=4), any::<bool>()).prop_map(|(mut tokens, rest)| {
            if rest {
                *tokens.last_mut().unwrap() = ">";
            }
            filter(&tokens.join("."))
        })
    }

    #[test]
    fn topic_covers_agrees_with_brute_force_exhaustively() {
        let topics = all_topics(4);
        let all = sequences(&["*", ">", "a", "b"], 3);
        let filters: Vec<Filter> = all
            .iter()
            .filter_map(|t| Filter::new(t.as_str()).ok())
            .collect();
        // 1 to 3 tokens, only the last of which may be `>`: 4 + 3 × 4 + 3 × 3 × 4.
        assert_eq!(filters.len(), 52);
        for a in &filters {
            for b in &filters {
                assert_eq!(a.covers(b), brute_covers(a, b, &topics), "{a} covers {b}");
            }
        }
    }

    proptest! {
        #[test]
        fn topic_covers_agrees_with_brute_force(a in any_filter(), b in any_filter()) {
            let topics = all_topics(5);
            prop_assert_eq!(a.covers(&b), brute_covers(&a, &b, &topics));
        }

        #[test]
        fn topic_tree_matches_a_naive_scan(
            inserts in proptest::collection::vec((any_filter(), 0u8..6), 0..=24),
            removals in proptest::collection::vec((any_filter(), 0u8..6, any::<bool>()), 0..=24),
        ) {
            let topics = all_topics(5);
            let mut tree = FilterTree::new();
            let mut pairs = BTreeSet::new();
            for (f, v) in &inserts {
                prop_assert_eq!(tree.insert(f, *v), pairs.insert((f.clone(), *v)));
            }
            // Half the removals take a pair that was inserted, so they are not all misses.
            for (i, (random_filter, random_value, take_inserted)) in removals.iter().enumerate() {
                let (f, v) = match inserts.get(i) {
                    Some((f, v)) if *take_inserted => (f, v),
                    _ => (random_filter, random_value),
                };
                prop_assert_eq!(tree.remove(f, v), pairs.remove(&(f.clone(), *v)));
            }
            prop_assert_eq!(tree.len(), pairs.len());
            for t in &topics {
                let naive: BTreeSet<u8> =
                    pairs.iter().filter(|(f, _)| f.matches(t)).map(|&(_, v)| v).collect();
                prop_assert_eq!(tree.matching(t), naive, "topic {}", t);
            }
            for (f, v) in &pairs {
                prop_assert!(tree.remove(f, v));
            }
            prop_assert!(tree.is_empty() && tree.root.is_empty());
        }
    }
}
