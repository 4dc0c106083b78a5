//! Label selectors (`a=b,c!=d,e in (f,g),h notin (i),j,!k,l>3`) and field selectors (`f=v,g!=w`), as
//! upstream parses and matches them, plus `metav1.LabelSelector` (matchLabels / matchExpressions).

use serde_json::Value;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Eq,
    NotEq,
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    DoesNotExist,
    Gt(i64),
    Lt(i64),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub op: Op,
    /// The value for `Eq` / `NotEq`.
    pub value: String,
}

/// A parsed label selector; empty matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector {
    pub reqs: Vec<Requirement>,
}

fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/')
}

struct Lexer<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Lexer<'a> {
    fn skip_ws(&mut self) {
        while self.i < self.s.len() && (self.s[self.i] as char).is_whitespace() {
            self.i += 1;
        }
    }
    fn peek(&mut self) -> Option<char> {
        self.skip_ws();
        self.s.get(self.i).map(|b| *b as char)
    }
    fn word(&mut self) -> String {
        self.skip_ws();
        let start = self.i;
        while self.i < self.s.len() && is_key_char(self.s[self.i] as char) {
            self.i += 1;
        }
        String::from_utf8_lossy(&self.s[start..self.i]).into_owned()
    }
    fn eat(&mut self, tok: &str) -> bool {
        self.skip_ws();
        if self.s[self.i..].starts_with(tok.as_bytes()) {
            self.i += tok.len();
            true
        } else {
            false
        }
    }
}

impl LabelSelector {
    pub fn everything() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }

    /// Parses the `labelSelector` query parameter.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut lx = Lexer {
            s: s.as_bytes(),
            i: 0,
        };
        let mut reqs = vec![];
        if lx.peek().is_none() {
            return Ok(Self { reqs });
        }
        loop {
            reqs.push(parse_requirement(&mut lx)?);
            match lx.peek() {
                None => break,
                Some(',') => {
                    lx.i += 1;
                }
                Some(c) => return Err(format!("found '{c}', expected: ',' or 'end of string'")),
            }
        }
        Ok(Self { reqs })
    }

    /// Builds a selector from a `metav1.LabelSelector` JSON value (null: matches nothing, `{}`:
    /// everything, as upstream's `LabelSelectorAsSelector`).
    pub fn from_api(v: &Value) -> Result<Option<Self>, String> {
        if v.is_null() {
            return Ok(None);
        }
        let mut reqs = vec![];
        if let Some(m) = v.get("matchLabels").and_then(Value::as_object) {
            for (k, val) in m {
                reqs.push(Requirement {
                    key: k.clone(),
                    op: Op::Eq,
                    value: val.as_str().unwrap_or_default().to_string(),
                });
            }
        }
        if let Some(exprs) = v.get("matchExpressions").and_then(Value::as_array) {
            for e in exprs {
                let key = e.get("key").and_then(Value::as_str).unwrap_or_default();
                let values: Vec<String> = e
                    .get("values")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default();
                let op = match e.get("operator").and_then(Value::as_str).unwrap_or("") {
                    "In" => Op::In(values),
                    "NotIn" => Op::NotIn(values),
                    "Exists" => Op::Exists,
                    "DoesNotExist" => Op::DoesNotExist,
                    other => {
                        return Err(format!("{other:?} is not a valid label selector operator"))
                    }
                };
                reqs.push(Requirement {
                    key: key.into(),
                    op,
                    value: String::new(),
                });
            }
        }
        Ok(Some(Self { reqs }))
    }

    pub fn matches(&self, labels: &[(&str, &str)]) -> bool {
        self.reqs.iter().all(|r| {
            let got = labels.iter().find(|(k, _)| *k == r.key).map(|(_, v)| *v);
            match &r.op {
                Op::Eq => got == Some(r.value.as_str()),
                Op::NotEq => got != Some(r.value.as_str()),
                Op::In(vs) => got.is_some_and(|g| vs.iter().any(|v| v == g)),
                Op::NotIn(vs) => !got.is_some_and(|g| vs.iter().any(|v| v == g)),
                Op::Exists => got.is_some(),
                Op::DoesNotExist => got.is_none(),
                Op::Gt(n) => got
                    .and_then(|g| g.parse::<i64>().ok())
                    .is_some_and(|g| g > *n),
                Op::Lt(n) => got
                    .and_then(|g| g.parse::<i64>().ok())
                    .is_some_and(|g| g < *n),
            }
        })
    }
}

fn parse_values(lx: &mut Lexer) -> Result<Vec<String>, String> {
    if !lx.eat("(") {
        return Err(format!(
            "found '{}', expected: '('",
            lx.peek().map(String::from).unwrap_or_default()
        ));
    }
    let mut vals = vec![];
    loop {
        let w = lx.word();
        if !w.is_empty() {
            vals.push(w);
        }
        if lx.eat(",") {
            continue;
        }
        if lx.eat(")") {
            return Ok(vals);
        }
        return Err("found end of string, expected: ',' or ')'".into());
    }
}

fn parse_requirement(lx: &mut Lexer) -> Result<Requirement, String> {
    let req = |key: String, op: Op, value: String| -> Result<Requirement, String> {
        if key.is_empty() {
            return Err("key is empty".into());
        }
        Ok(Requirement { key, op, value })
    };
    if lx.eat("!") {
        let key = lx.word();
        return req(key, Op::DoesNotExist, String::new());
    }
    let key = lx.word();
    if key.is_empty() {
        return Err(format!(
            "found '{}', expected: identifier",
            lx.peek().map(String::from).unwrap_or_default()
        ));
    }
    match lx.peek() {
        None | Some(',') => req(key, Op::Exists, String::new()),
        Some(_) => {
            if lx.eat("==") || lx.eat("=") {
                let v = lx.word();
                req(key, Op::Eq, v)
            } else if lx.eat("!=") {
                let v = lx.word();
                req(key, Op::NotEq, v)
            } else if lx.eat(">") {
                let v = lx.word();
                let n = v
                    .parse()
                    .map_err(|_| format!("invalid integer value {v:?}"))?;
                req(key, Op::Gt(n), String::new())
            } else if lx.eat("<") {
                let v = lx.word();
                let n = v
                    .parse()
                    .map_err(|_| format!("invalid integer value {v:?}"))?;
                req(key, Op::Lt(n), String::new())
            } else {
                let w = lx.word();
                match w.as_str() {
                    "in" => {
                        let vals = parse_values(lx)?;
                        req(key, Op::In(vals), String::new())
                    }
                    "notin" => {
                        let vals = parse_values(lx)?;
                        req(key, Op::NotIn(vals), String::new())
                    }
                    other => Err(format!(
                        "found '{other}', expected: in, notin, =, ==, !=, gt, lt"
                    )),
                }
            }
        }
    }
}

/// One `field=value` or `field!=value` term of a field selector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldTerm {
    pub field: String,
    pub value: String,
    pub negated: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector {
    pub terms: Vec<FieldTerm>,
}

impl FieldSelector {
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// Parses the `fieldSelector` query parameter (`\` escapes `,`, `=`, `!` and `\`).
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut terms = vec![];
        for part in split_unescaped(s, ',') {
            if part.trim().is_empty() {
                continue;
            }
            let (field, value, negated) = if let Some(i) = find_unescaped(&part, "!=") {
                (&part[..i], &part[i + 2..], true)
            } else if let Some(i) = find_unescaped(&part, "==") {
                (&part[..i], &part[i + 2..], false)
            } else if let Some(i) = find_unescaped(&part, "=") {
                (&part[..i], &part[i + 1..], false)
            } else {
                return Err(format!(
                    "invalid selector: '{part}'; can't understand '{part}'"
                ));
            };
            terms.push(FieldTerm {
                field: field.trim().to_string(),
                value: unescape(value),
                negated,
            });
        }
        Ok(Self { terms })
    }

    /// The first field the `supported` list does not have, if any.
    pub fn unsupported<'a>(&'a self, supported: &[&str]) -> Option<&'a str> {
        self.terms
            .iter()
            .map(|t| t.field.as_str())
            .find(|f| !supported.contains(f))
    }

    /// Matches against the object's selectable fields (name, value).
    pub fn matches(&self, fields: &[(&str, String)]) -> bool {
        self.terms.iter().all(|t| {
            let got = fields
                .iter()
                .find(|(f, _)| *f == t.field)
                .map(|(_, v)| v.as_str())
                .unwrap_or("");
            (got == t.value) != t.negated
        })
    }

    /// The value the selector pins `field` to, if it has an `=` term for it.
    pub fn exact(&self, field: &str) -> Option<&str> {
        self.terms
            .iter()
            .find(|t| t.field == field && !t.negated)
            .map(|t| t.value.as_str())
    }
}

fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut out = vec![];
    let mut cur = String::new();
    let mut esc = false;
    for c in s.chars() {
        if esc {
            cur.push('\\');
            cur.push(c);
            esc = false;
        } else if c == '\\' {
            esc = true;
        } else if c == sep {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    out.push(cur);
    out
}

fn find_unescaped(s: &str, pat: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            i += 2;
            continue;
        }
        if s[i..].starts_with(pat) {
            return Some(i);
        }
        i += 1;
    }
    None
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut esc = false;
    for c in s.chars() {
        if esc {
            out.push(c);
            esc = false;
        } else if c == '\\' {
            esc = true;
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn m(sel: &str, labels: &[(&str, &str)]) -> bool {
        LabelSelector::parse(sel).unwrap().matches(labels)
    }

    #[test]
    fn label_selectors() {
        let l = [("app", "web"), ("tier", "front")];
        assert!(m("", &l));
        assert!(m("app=web", &l));
        assert!(m("app==web", &l));
        assert!(!m("app!=web", &l));
        assert!(m("x!=y", &l));
        assert!(m("app in (web, db)", &l));
        assert!(!m("app notin (web,db)", &l));
        assert!(m("missing notin (a)", &l));
        assert!(m("tier", &l));
        assert!(m("!missing", &l));
        assert!(!m("!tier", &l));
        assert!(m("app=web,tier=front", &l));
        assert!(!m("app=web,tier=back", &l));
        assert!(m("n>3", &[("n", "5")]));
        assert!(LabelSelector::parse("app in web").is_err());
        assert!(LabelSelector::parse("=x").is_err());
    }

    #[test]
    fn api_selector() {
        let s = LabelSelector::from_api(&json!({"matchLabels": {"app": "a"},
            "matchExpressions": [{"key": "t", "operator": "In", "values": ["x"]}]}))
        .unwrap()
        .unwrap();
        assert!(s.matches(&[("app", "a"), ("t", "x")]));
        assert!(!s.matches(&[("app", "a")]));
    }

    #[test]
    fn field_selectors() {
        let f = FieldSelector::parse("metadata.name=a,status.phase!=Running").unwrap();
        assert!(f.matches(&[
            ("metadata.name", "a".into()),
            ("status.phase", "Pending".into())
        ]));
        assert!(!f.matches(&[
            ("metadata.name", "a".into()),
            ("status.phase", "Running".into())
        ]));
        assert_eq!(f.exact("metadata.name"), Some("a"));
        assert_eq!(f.unsupported(&["metadata.name"]), Some("status.phase"));
        let e = FieldSelector::parse(r"metadata.name=a\,b").unwrap();
        assert_eq!(e.terms[0].value, "a,b");
    }
}
