//! Node sets in ClusterShell's syntax: `node[01-20]`, `rack[1-2]-node[1-4/2]`, groups `@web`,
//! and the operators `,` (union), `!` (difference), `&` (intersection) and `^` (symmetric
//! difference), applied from left to right as `nodeset` does.
//!
//! A set is kept sorted the way `nodeset -e` prints it: by the name's text with its numbers
//! taken out, then by the numbers. [`NodeSet`]'s `Display` folds it back (`node[1-3,7]`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Expanding more names than this is refused (`node[1-999999999]` is a typo, not a cluster).
pub const MAX_NODES: usize = 1_000_000;

/// Group references nest at most this deep (a group naming itself is an error, not a hang).
const MAX_DEPTH: usize = 16;

/// Digit runs longer than this are text (they would not fit the number they stand for).
const MAX_DIGITS: usize = 18;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("node set {expr:?}: {reason}")]
pub struct NodeSetError {
    pub expr: String,
    pub reason: String,
}

/// One node name, with the numbers in it found for sorting and folding.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Node {
    /// The name with every number replaced by `%s`, as ClusterShell sorts patterns.
    key: String,
    /// The name with every number replaced by `\0`.
    pattern: String,
    /// The numbers in order, as ClusterShell sorts them: shorter first (`9` < `09` < `10` <
    /// `010`), then by value; `01` is not `1`.
    nums: Vec<(usize, u64, String)>,
    name: String,
}

impl Node {
    fn new(name: &str) -> Node {
        let mut pattern = String::new();
        let mut key = String::new();
        let mut nums = Vec::new();
        let mut rest = name;
        while !rest.is_empty() {
            let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
            if digits > 0 && digits <= MAX_DIGITS {
                let (d, tail) = rest.split_at(digits);
                pattern.push('\0');
                key.push_str("%s");
                nums.push((d.len(), d.parse().unwrap_or(0), d.to_string()));
                rest = tail;
            } else {
                let text = if digits > 0 {
                    digits
                } else {
                    rest.find(|c: char| c.is_ascii_digit())
                        .unwrap_or(rest.len())
                };
                pattern.push_str(&rest[..text]);
                key.push_str(&rest[..text]);
                rest = &rest[text..];
            }
        }
        Node {
            key,
            pattern,
            nums,
            name: name.to_string(),
        }
    }
}

impl Ord for Node {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key
            .cmp(&other.key)
            .then_with(|| self.pattern.cmp(&other.pattern))
            .then_with(|| self.nums.cmp(&other.nums))
            .then_with(|| self.name.cmp(&other.name))
    }
}

impl PartialOrd for Node {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// A set of node names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeSet {
    nodes: BTreeSet<Node>,
}

impl NodeSet {
    pub fn new() -> NodeSet {
        NodeSet::default()
    }

    /// Parses an expression without groups (`@name` is an error).
    pub fn parse(expr: &str) -> Result<NodeSet, NodeSetError> {
        NodeSet::parse_with(expr, &|_| None)
    }

    /// Parses an expression; `groups` gives the expression a group name stands for.
    pub fn parse_with(
        expr: &str,
        groups: &dyn Fn(&str) -> Option<String>,
    ) -> Result<NodeSet, NodeSetError> {
        parse(expr, groups, 0).map_err(|reason| NodeSetError {
            expr: expr.to_string(),
            reason,
        })
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.nodes.contains(&Node::new(name))
    }

    pub fn insert(&mut self, name: &str) {
        self.nodes.insert(Node::new(name));
    }

    /// The names in order (as `nodeset -e` prints them).
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.nodes.iter().map(|n| n.name.as_str())
    }

    /// The first `n` names.
    pub fn first(&self, n: usize) -> NodeSet {
        NodeSet {
            nodes: self.nodes.iter().take(n).cloned().collect(),
        }
    }

    pub fn union(&mut self, other: NodeSet) {
        self.nodes.extend(other.nodes);
    }

    pub fn difference(&mut self, other: &NodeSet) {
        self.nodes.retain(|n| !other.nodes.contains(n));
    }

    pub fn intersection(&mut self, other: &NodeSet) {
        self.nodes.retain(|n| other.nodes.contains(n));
    }

    pub fn symmetric_difference(&mut self, other: NodeSet) {
        for n in other.nodes {
            if !self.nodes.remove(&n) {
                self.nodes.insert(n);
            }
        }
    }

    /// The folded form, `node[1-3,7],web01`.
    pub fn fold(&self) -> String {
        self.to_string()
    }
}

impl FromIterator<String> for NodeSet {
    fn from_iter<I: IntoIterator<Item = String>>(iter: I) -> Self {
        NodeSet {
            nodes: iter.into_iter().map(|s| Node::new(&s)).collect(),
        }
    }
}

impl<'a> FromIterator<&'a str> for NodeSet {
    fn from_iter<I: IntoIterator<Item = &'a str>>(iter: I) -> Self {
        NodeSet {
            nodes: iter.into_iter().map(Node::new).collect(),
        }
    }
}

fn parse(
    expr: &str,
    groups: &dyn Fn(&str) -> Option<String>,
    depth: usize,
) -> Result<NodeSet, String> {
    let mut set = NodeSet::new();
    let mut op = ',';
    let mut start = 0;
    let mut nesting = 0usize;
    let bytes = expr.as_bytes();
    for i in 0..=bytes.len() {
        let c = bytes.get(i).copied().map(char::from);
        match c {
            Some('[') => nesting += 1,
            Some(']') => {
                nesting = nesting
                    .checked_sub(1)
                    .ok_or_else(|| format!("']' without '[' at column {}", i + 1))?;
            }
            Some(c @ (',' | '!' | '&' | '^')) if nesting == 0 => {
                apply(&mut set, op, &expr[start..i], groups, depth)?;
                op = c;
                start = i + 1;
            }
            None if nesting > 0 => return Err("'[' is never closed".to_string()),
            None => apply(&mut set, op, &expr[start..], groups, depth)?,
            _ => {}
        }
    }
    Ok(set)
}

fn apply(
    set: &mut NodeSet,
    op: char,
    term: &str,
    groups: &dyn Fn(&str) -> Option<String>,
    depth: usize,
) -> Result<(), String> {
    let term = term.trim();
    if term.is_empty() {
        // `a,,b` and a trailing comma are harmless; an operator needs something to act on.
        return if op == ',' {
            Ok(())
        } else {
            Err(format!("'{op}' needs a node set after it"))
        };
    }
    let other = if let Some(name) = term.strip_prefix('@') {
        if depth >= MAX_DEPTH {
            return Err(format!(
                "group @{name} nests too deep (a group naming itself?)"
            ));
        }
        let def = groups(name).ok_or_else(|| format!("unknown group @{name}"))?;
        parse(&def, groups, depth + 1).map_err(|e| format!("in group @{name}: {e}"))?
    } else {
        expand(term)?
    };
    match op {
        ',' => set.union(other),
        '!' => set.difference(&other),
        '&' => set.intersection(&other),
        _ => set.symmetric_difference(other),
    }
    if set.len() > MAX_NODES {
        return Err(format!("more than {MAX_NODES} nodes"));
    }
    Ok(())
}

/// One term without operators: `rack[1-2]-node[01-04]`.
fn expand(term: &str) -> Result<NodeSet, String> {
    let mut names = vec![String::new()];
    for seg in segments(term)? {
        match seg {
            Segment::Text(text) => names.iter_mut().for_each(|n| n.push_str(text)),
            Segment::Range(items) => {
                let values = range_values(&items);
                if names.len().saturating_mul(values.len()) > MAX_NODES {
                    return Err(format!("{term:?}: more than {MAX_NODES} nodes"));
                }
                names = names
                    .iter()
                    .flat_map(|n| values.iter().map(move |v| format!("{n}{v}")))
                    .collect();
            }
        }
    }
    if names.iter().any(String::is_empty) {
        return Err(format!("{term:?}: empty node name"));
    }
    Ok(names.into_iter().collect())
}

/// A term's pieces: text, and the insides of brackets.
enum Segment<'a> {
    Text(&'a str),
    Range(Vec<RangeItem>),
}

fn segments(term: &str) -> Result<Vec<Segment<'_>>, String> {
    if term.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{term:?}: a node name has no spaces or control characters"
        ));
    }
    let mut out = Vec::new();
    let mut rest = term;
    while !rest.is_empty() {
        match rest.find('[') {
            None => {
                if rest.contains(']') {
                    return Err(format!("{term:?}: ']' without '['"));
                }
                out.push(Segment::Text(rest));
                rest = "";
            }
            Some(open) => {
                let text = &rest[..open];
                if text.contains(']') {
                    return Err(format!("{term:?}: ']' without '['"));
                }
                let close = rest[open..]
                    .find(']')
                    .map(|c| open + c)
                    .ok_or_else(|| format!("{term:?}: '[' is never closed"))?;
                let inside = &rest[open + 1..close];
                let items =
                    range_items(inside).map_err(|e| format!("{term:?}: [{inside}]: {e}"))?;
                out.push(Segment::Text(text));
                out.push(Segment::Range(items));
                rest = &rest[close + 1..];
            }
        }
    }
    Ok(out)
}

/// Whether `name` is in the node set `expr` (without groups), without expanding it: a
/// relayed grant names its run's nodes folded, and each node checks only itself.
pub fn contains_name(expr: &str, name: &str) -> Result<bool, NodeSetError> {
    let err = |reason: String| NodeSetError {
        expr: expr.to_string(),
        reason,
    };
    let mut found = false;
    let mut op = ',';
    let mut start = 0;
    let mut nesting = 0usize;
    let bytes = expr.as_bytes();
    for i in 0..=bytes.len() {
        let c = bytes.get(i).copied().map(char::from);
        let term = match c {
            Some('[') => {
                nesting += 1;
                continue;
            }
            Some(']') => {
                nesting = nesting
                    .checked_sub(1)
                    .ok_or_else(|| err(format!("']' without '[' at column {}", i + 1)))?;
                continue;
            }
            Some(',' | '!' | '&' | '^') if nesting == 0 => &expr[start..i],
            None if nesting > 0 => return Err(err("'[' is never closed".to_string())),
            None => &expr[start..],
            _ => continue,
        };
        let term = term.trim();
        if term.is_empty() {
            if op != ',' {
                return Err(err(format!("'{op}' needs a node set after it")));
            }
        } else {
            if term.starts_with('@') {
                return Err(err(format!("{term}: groups are not allowed here")));
            }
            let here = term_contains(term, name).map_err(err)?;
            found = match op {
                ',' => found || here,
                '!' => found && !here,
                '&' => found && here,
                _ => found ^ here,
            };
        }
        if let Some(c) = c {
            op = c;
            start = i + 1;
        }
    }
    Ok(found)
}

/// Whether one term without operators (`rack[1-2]-node[01-04]`) yields `name`.
fn term_contains(term: &str, name: &str) -> Result<bool, String> {
    let segments = segments(term)?;
    Ok(!name.is_empty() && matches_segments(&segments, name))
}

fn matches_segments(segments: &[Segment<'_>], name: &str) -> bool {
    let Some((first, more)) = segments.split_first() else {
        return name.is_empty();
    };
    match first {
        Segment::Text(text) => name
            .strip_prefix(text)
            .is_some_and(|rest| matches_segments(more, rest)),
        Segment::Range(items) => {
            let digits = name.bytes().take_while(u8::is_ascii_digit).count();
            (1..=digits.min(MAX_DIGITS)).any(|len| {
                let (num, rest) = name.split_at(len);
                items.iter().any(|it| it.yields(num)) && matches_segments(more, rest)
            })
        }
    }
}

/// One item inside brackets: `lo-hi/step`, padded to `width` digits (0: unpadded).
#[derive(Debug, Clone, Copy)]
struct RangeItem {
    lo: u64,
    hi: u64,
    step: u64,
    width: usize,
}

impl RangeItem {
    fn yields(&self, digits: &str) -> bool {
        let Ok(v) = digits.parse::<u64>() else {
            return false;
        };
        v >= self.lo
            && v <= self.hi
            && (v - self.lo).is_multiple_of(self.step)
            && format!("{v:0width$}", width = self.width) == digits
    }
}

fn range_items(s: &str) -> Result<Vec<RangeItem>, String> {
    let mut out = Vec::new();
    for item in s.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, st)) => {
                let st: u64 = number(st)?;
                if st == 0 {
                    return Err("a step of 0".to_string());
                }
                (r, st)
            }
            None => (item, 1),
        };
        let (a, b) = range.split_once('-').unwrap_or((range, range));
        let (lo, hi) = (number(a)?, number(b)?);
        if lo > hi {
            return Err(format!("{range}: the start is past the end"));
        }
        let width = if a.len() > 1 && a.starts_with('0') {
            a.len()
        } else {
            0
        };
        if (hi - lo) / step >= MAX_NODES as u64 {
            return Err(format!("more than {MAX_NODES} nodes"));
        }
        out.push(RangeItem {
            lo,
            hi,
            step,
            width,
        });
    }
    Ok(out)
}

/// The values of bracket items, as written (`1-3,7,10-20/5`: padding from how the start is
/// written).
fn range_values(items: &[RangeItem]) -> Vec<String> {
    let mut out = Vec::new();
    for it in items {
        let mut v = it.lo;
        while v <= it.hi {
            out.push(format!("{v:0width$}", width = it.width));
            v = match v.checked_add(it.step) {
                Some(n) => n,
                None => break,
            };
        }
    }
    out
}

fn number(s: &str) -> Result<u64, String> {
    if s.is_empty() || s.len() > MAX_DIGITS || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{s:?} is not a number"));
    }
    s.parse().map_err(|_| format!("{s:?} is not a number"))
}

impl NodeSet {
    /// The folded rows: per pattern (sorted), rectangles of digit strings, one list per
    /// dimension, in ClusterShell's order.
    fn rows(&self) -> Vec<(&str, Vec<Vec<Vec<&str>>>)> {
        let mut by_pattern: BTreeMap<(&str, &str), Vec<&Node>> = BTreeMap::new();
        for n in &self.nodes {
            by_pattern.entry((&n.key, &n.pattern)).or_default().push(n);
        }
        by_pattern
            .into_iter()
            .map(|((_, pattern), nodes)| {
                let tuples: Vec<Vec<&str>> = nodes
                    .iter()
                    .map(|n| n.nums.iter().map(|(_, _, d)| d.as_str()).collect())
                    .collect();
                (pattern, fold_nd(tuples))
            })
            .collect()
    }

    /// Every name, in the order `nodeset -e` prints them: rectangle by rectangle of the
    /// folded form.
    pub fn expanded(&self) -> Vec<String> {
        let mut out = Vec::with_capacity(self.len());
        for (pattern, rows) in self.rows() {
            for row in rows {
                let mut names = vec![String::new()];
                let mut dims = row.iter();
                for piece in pattern.split('\0').enumerate() {
                    let (i, text) = piece;
                    if i > 0 {
                        let values = dims.next().map(Vec::as_slice).unwrap_or(&[]);
                        names = names
                            .iter()
                            .flat_map(|n| values.iter().map(move |v| format!("{n}{v}")))
                            .collect();
                    }
                    names.iter_mut().for_each(|n| n.push_str(text));
                }
                out.extend(names);
            }
        }
        out
    }
}

impl fmt::Display for NodeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (pattern, rows) in self.rows() {
            for row in rows {
                if !first {
                    f.write_str(",")?;
                }
                first = false;
                let mut dims = row.iter();
                for (i, text) in pattern.split('\0').enumerate() {
                    if i > 0 {
                        let values = dims.next().map(Vec::as_slice).unwrap_or(&[]);
                        f.write_str(&fold_one(values))?;
                    }
                    f.write_str(text)?;
                }
            }
        }
        Ok(())
    }
}

/// A digit string ordered as ClusterShell orders them: shorter first, then as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Idx<'a>(&'a str);

impl Ord for Idx<'_> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.0.len(), self.0).cmp(&(other.0.len(), other.0))
    }
}

impl PartialOrd for Idx<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

type Vector<'a> = Vec<BTreeSet<Idx<'a>>>;

/// Folds tuples of digit strings (one per dimension) into rectangles, as ClusterShell's
/// `RangeSetND` does, so that `herd nodeset -f` prints what `nodeset -f` prints: when only one
/// dimension varies, one rectangle; otherwise single nodes merged pairwise (vectors that differ
/// in one dimension), biggest first, until nothing merges.
fn fold_nd(tuples: Vec<Vec<&str>>) -> Vec<Vec<Vec<&str>>> {
    let Some(k) = tuples.first().map(Vec::len) else {
        return Vec::new();
    };
    let mut vecs: Vec<Vector<'_>> = tuples
        .iter()
        .map(|t| t.iter().map(|d| BTreeSet::from([Idx(d)])).collect())
        .collect();
    let varying = (0..k)
        .filter(|&i| vecs.iter().any(|v| v[i] != vecs[0][i]))
        .count();
    if vecs.len() > 1 && varying <= 1 {
        let mut one = vecs.swap_remove(0);
        for v in vecs {
            for (dim, rs) in one.iter_mut().zip(v) {
                dim.extend(rs);
            }
        }
        vecs = vec![one];
    } else if vecs.len() > 1 {
        merge_multivariate(&mut vecs);
    }
    vecs.into_iter()
        .map(|v| {
            v.into_iter()
                .map(|rs| rs.into_iter().map(|i| i.0).collect())
                .collect()
        })
        .collect()
}

fn sort_vectors(vecs: &mut [Vector<'_>]) {
    // Bigger rectangles first, then bigger dimensions, then lower first and last index (as
    // text, as ClusterShell compares them).
    vecs.sort_by_cached_key(|v| {
        let size: usize = v.iter().map(BTreeSet::len).product();
        let dims: Vec<(std::cmp::Reverse<usize>, &str, &str)> = v
            .iter()
            .map(|rs| {
                let first = rs.first().map(|i| i.0).unwrap_or("");
                let last = rs.last().map(|i| i.0).unwrap_or("");
                (std::cmp::Reverse(rs.len()), first, last)
            })
            .collect();
        (std::cmp::Reverse(size), dims)
    });
}

/// Two vectors merge when they differ in one dimension only (disjoint there, or one holding
/// the other).
fn merged<'a>(a: &Vector<'a>, b: &Vector<'a>) -> Option<Vector<'a>> {
    let mut out = Vec::with_capacity(a.len());
    let mut diff = 0;
    for (x, y) in a.iter().zip(b) {
        if x == y {
            out.push(x.clone());
            continue;
        }
        diff += 1;
        if diff > 1 {
            return None;
        }
        if x.is_disjoint(y) {
            out.push(x.union(y).copied().collect());
        } else if x.is_superset(y) {
            out.push(x.clone());
        } else if y.is_superset(x) {
            out.push(y.clone());
        } else {
            return None;
        }
    }
    Some(out)
}

fn merge_multivariate(vecs: &mut Vec<Vector<'_>>) {
    let (mut full, mut changed) = (false, true);
    while changed {
        changed = false;
        sort_vectors(vecs);
        let mut i1 = 0;
        while i1 + 1 < vecs.len() {
            let mut i2 = i1 + 1;
            i1 += 1;
            while i2 < vecs.len() {
                match merged(&vecs[i1 - 1], &vecs[i2]) {
                    Some(m) => {
                        changed = true;
                        vecs[i1 - 1] = m;
                        vecs.remove(i2);
                    }
                    // Easy passes look at neighbours only; a full pass ends the work.
                    None if !full => break,
                    None => i2 += 1,
                }
            }
        }
        if !changed && !full {
            changed = true;
            full = true;
        }
    }
}

/// Folds the digit strings of one dimension (in the order above): `1`, or `[01-03,07]`.
fn fold_one(values: &[&str]) -> String {
    if let [one] = values {
        return one.to_string();
    }
    let mut items: Vec<String> = Vec::new();
    let mut i = 0;
    while i < values.len() {
        let start = values[i];
        let width = if start.len() > 1 && start.starts_with('0') {
            start.len()
        } else {
            0
        };
        let mut v: u64 = start.parse().unwrap_or(0);
        let mut j = i + 1;
        while j < values.len() && v < u64::MAX && values[j] == format!("{:0width$}", v + 1) {
            v += 1;
            j += 1;
        }
        items.push(if j - i == 1 {
            start.to_string()
        } else {
            format!("{start}-{}", values[j - 1])
        });
        i = j;
    }
    format!("[{}]", items.join(","))
}

#[cfg(test)]
mod tests;
