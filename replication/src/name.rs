//! [`NodeName`]: the configured name of a node.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;

/// A node's configured name (`node = "us-1"` in its config file): how
/// peers, placement, certificates (`node:<name>`) and operators refer to it.
/// Unlike its [`meridian_engine::Incarnation`], it survives a rebuilt data
/// directory.
///
/// Borrows as `str`, so maps keyed by names are looked up with a `&str`.
/// Archived as a plain string: a [`crate::message::Hello`] carrying one is
/// the same bytes as one carrying a `String`. The client crate's wire types
/// (which depend on none of the node's crates) carry names as `String`.
#[derive(
    Clone,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub struct NodeName(String);

impl NodeName {
    pub fn new(name: impl Into<String>) -> NodeName {
        NodeName(name.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl Deref for NodeName {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for NodeName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for NodeName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<String> for NodeName {
    fn from(name: String) -> NodeName {
        NodeName(name)
    }
}

impl From<&str> for NodeName {
    fn from(name: &str) -> NodeName {
        NodeName(name.to_owned())
    }
}

impl From<&String> for NodeName {
    fn from(name: &String) -> NodeName {
        NodeName(name.clone())
    }
}

impl From<NodeName> for String {
    fn from(name: NodeName) -> String {
        name.0
    }
}

impl PartialEq<str> for NodeName {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for NodeName {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl PartialEq<String> for NodeName {
    fn eq(&self, other: &String) -> bool {
        &self.0 == other
    }
}

impl PartialEq<NodeName> for str {
    fn eq(&self, other: &NodeName) -> bool {
        self == other.0
    }
}

impl PartialEq<NodeName> for &str {
    fn eq(&self, other: &NodeName) -> bool {
        *self == other.0
    }
}

impl PartialEq<NodeName> for String {
    fn eq(&self, other: &NodeName) -> bool {
        *self == other.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn looks_up_by_str_and_prints_as_the_name() {
        let mut m = BTreeMap::new();
        m.insert(NodeName::from("us"), 1);
        assert_eq!(m.get("us"), Some(&1));
        assert_eq!(m.get("eu"), None);
        assert_eq!(NodeName::from("us").to_string(), "us");
        assert_eq!(format!("{:?}", NodeName::from("us")), "\"us\"");
    }

    #[test]
    fn archives_as_the_string_it_holds() {
        let name = rkyv::to_bytes::<rkyv::rancor::Error>(&NodeName::from("us-east-1")).unwrap();
        let string = rkyv::to_bytes::<rkyv::rancor::Error>(&"us-east-1".to_string()).unwrap();
        assert_eq!(&name[..], &string[..]);
        let back: NodeName = rkyv::from_bytes::<NodeName, rkyv::rancor::Error>(&name).unwrap();
        assert_eq!(back, "us-east-1");
    }
}
