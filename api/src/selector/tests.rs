use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn sel(s: &str) -> Selector {
    Selector::parse(s).unwrap_or_else(|e| panic!("{e}"))
}

fn err(s: &str) -> String {
    Selector::parse(s).unwrap_err().to_string()
}

#[test]
fn equality_and_inequality_match_as_calico() {
    let rr = labels(&[("role", "rr")]);
    let none = labels(&[]);
    assert!(sel("role == 'rr'").matches(&rr));
    assert!(!sel("role == 'rr'").matches(&none));
    assert!(!sel("role != 'rr'").matches(&rr));
    // != also matches when the label is absent.
    assert!(sel("role != 'rr'").matches(&none));
}

#[test]
fn has_and_not_has_test_presence() {
    let l = labels(&[("route-reflector", "")]);
    assert!(sel("has(route-reflector)").matches(&l));
    assert!(!sel("!has(route-reflector)").matches(&l));
    assert!(sel("!has(edge)").matches(&l));
}

#[test]
fn in_and_not_in_test_set_membership() {
    let a = labels(&[("zone", "a")]);
    let c = labels(&[("zone", "c")]);
    let none = labels(&[]);
    let s = sel("zone in {'a', \"b\"}");
    assert!(s.matches(&a));
    assert!(!s.matches(&c));
    assert!(!s.matches(&none));
    let n = sel("zone not in {'a','b'}");
    assert!(!n.matches(&a));
    assert!(n.matches(&c));
    assert!(n.matches(&none));
    assert!(!sel("zone in {}").matches(&a));
}

#[test]
fn all_and_the_empty_selector_match_everything() {
    for s in ["all()", "", "   ", " all ( ) "] {
        assert!(sel(s).is_all(), "{s:?}");
        assert!(sel(s).matches(&labels(&[])));
    }
}

#[test]
fn and_binds_tighter_than_or() {
    // a || b && c  ==  a || (b && c)
    let s = sel("a == '1' || b == '1' && c == '1'");
    assert!(s.matches(&labels(&[("a", "1")])));
    assert!(!s.matches(&labels(&[("b", "1")])));
    assert_eq!(s, sel("a == '1' || (b == '1' && c == '1')"));
    assert_ne!(s, sel("(a == '1' || b == '1') && c == '1'"));
}

#[test]
fn not_binds_tighter_than_and() {
    // !a == 'x' && b == 'y'  ==  (!(a == 'x')) && b == 'y'
    let s = sel("!a == 'x' && b == 'y'");
    assert!(s.matches(&labels(&[("b", "y")])));
    assert!(!s.matches(&labels(&[("a", "x"), ("b", "y")])));
    assert_eq!(s, sel("(!(a == 'x')) && b == 'y'"));
}

#[test]
fn parentheses_override_precedence() {
    let s = sel("(a == '1' || b == '1') && c == '1'");
    assert!(!s.matches(&labels(&[("a", "1")])));
    assert!(s.matches(&labels(&[("a", "1"), ("c", "1")])));
    assert!(sel("!(a == '1' && b == '1')").matches(&labels(&[("a", "1")])));
}

#[test]
fn quotes_of_either_kind_may_hold_the_other() {
    let s = sel(r#"msg == "it's" && q == '"x"'"#);
    assert!(s.matches(&labels(&[("msg", "it's"), ("q", "\"x\"")])));
    assert_eq!(s.to_string(), r#"msg == "it's" && q == '"x"'"#);
    assert!(sel("a == ''").matches(&labels(&[("a", "")])));
}

#[test]
fn label_keys_may_have_prefixes_dots_and_dashes() {
    let s = sel("kubernetes.io/hostname == 'node-1' && has(margay.dev/route_reflector)");
    assert!(s.matches(&labels(&[
        ("kubernetes.io/hostname", "node-1"),
        ("margay.dev/route_reflector", "")
    ])));
}

#[test]
fn display_is_canonical() {
    assert_eq!(sel("role=='rr'").to_string(), "role == 'rr'");
    assert_eq!(sel("a in {'c','b','b'}").to_string(), "a in {'b', 'c'}");
    assert_eq!(
        sel("!(a=='1'||b=='2')").to_string(),
        "!(a == '1' || b == '2')"
    );
    assert_eq!(
        sel("(a=='1'||b=='2')&&!has(c)").to_string(),
        "(a == '1' || b == '2') && !has(c)"
    );
    assert_eq!(
        sel("a=='1'&&(b=='2'&&c=='3')").to_string(),
        "a == '1' && (b == '2' && c == '3')"
    );
    assert_eq!(sel("").to_string(), "all()");
}

#[test]
fn errors_point_at_the_column() {
    assert_eq!(
        err("role = x"),
        r#"selector "role = x": column 6: expected ==, !=, in or not in"#
    );
    assert_eq!(
        err("role == rr"),
        r#"selector "role == rr": column 9: expected a quoted value ('...' or "...")"#
    );
    assert_eq!(
        err("role == 'rr"),
        r#"selector "role == 'rr": column 9: unterminated string"#
    );
    assert_eq!(err("has(a"), r#"selector "has(a": column 6: expected )"#);
    assert_eq!(
        err("has()"),
        r#"selector "has()": column 5: expected a label key"#
    );
    assert_eq!(
        err("a == 'b' &&"),
        r#"selector "a == 'b' &&": column 12: expected a label key, has(, all(, ! or ("#
    );
    assert_eq!(
        err("a == 'b' c"),
        r#"selector "a == 'b' c": column 10: expected &&, || or end of selector"#
    );
    assert_eq!(
        err("a in {'b' 'c'}"),
        r#"selector "a in {'b' 'c'}": column 11: expected , or }"#
    );
    assert_eq!(
        err("a in 'b'"),
        r#"selector "a in 'b'": column 6: expected {"#
    );
    assert_eq!(
        err("(a == 'b'"),
        r#"selector "(a == 'b'": column 10: expected )"#
    );
    assert_eq!(
        err("a & b"),
        r#"selector "a & b": column 3: expected ==, !=, in or not in"#
    );
    assert_eq!(
        err("all(x)"),
        r#"selector "all(x)": column 5: expected ) (all() takes no arguments)"#
    );
}

#[test]
fn error_columns_count_characters_not_bytes() {
    assert_eq!(
        err("é == 'x' ="),
        r#"selector "é == 'x' =": column 1: expected a label key, has(, all(, ! or ("#
    );
    assert_eq!(
        err("a == 'é' b"),
        r#"selector "a == 'é' b": column 10: expected &&, || or end of selector"#
    );
}

#[test]
fn kubernetes_label_selectors_match() {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
    let req = |key: &str, op: &str, values: &[&str]| LabelSelectorRequirement {
        key: key.into(),
        operator: op.into(),
        values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
    };
    let ls = LabelSelector {
        match_labels: Some(labels(&[("app", "web")])),
        match_expressions: Some(vec![
            req("tier", "In", &["fe", "be"]),
            req("canary", "DoesNotExist", &[]),
            req("env", "NotIn", &["prod"]),
            req("team", "Exists", &[]),
        ]),
    };
    let ok = labels(&[("app", "web"), ("tier", "fe"), ("team", "x")]);
    assert_eq!(label_selector_matches(&ls, &ok), Ok(true));
    let mut canary = ok.clone();
    canary.insert("canary".into(), "1".into());
    assert_eq!(label_selector_matches(&ls, &canary), Ok(false));
    let mut prod = ok.clone();
    prod.insert("env".into(), "prod".into());
    assert_eq!(label_selector_matches(&ls, &prod), Ok(false));
    assert_eq!(
        label_selector_matches(&LabelSelector::default(), &labels(&[])),
        Ok(true)
    );
    assert_eq!(
        selector_from_label_selector(&ls).unwrap().to_string(),
        "app == 'web' && tier in {'be', 'fe'} && !has(canary) && env not in {'prod'} && has(team)"
    );
    let bad = LabelSelector {
        match_expressions: Some(vec![req("a", "Equals", &["x"])]),
        ..Default::default()
    };
    assert_eq!(
        label_selector_matches(&bad, &ok).unwrap_err().to_string(),
        r#"matchExpressions[0].operator "Equals" is not one of In, NotIn, Exists, DoesNotExist"#
    );
    let no_values = LabelSelector {
        match_expressions: Some(vec![req("a", "In", &[])]),
        ..Default::default()
    };
    assert!(label_selector_matches(&no_values, &ok).is_err());
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a".to_string()),
        Just("b".to_string()),
        Just("margay.dev/role".to_string()),
        "[a-z][a-z0-9._/-]{0,6}"
    ]
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("x".to_string()),
        Just("y".to_string()),
        Just("it's".to_string()),
        "[a-z0-9 \"-]{0,5}"
    ]
}

fn expr() -> impl Strategy<Value = Expr> {
    let leaf = prop_oneof![
        Just(Expr::All),
        key().prop_map(Expr::Has),
        (key(), value()).prop_map(|(k, v)| Expr::Eq(k, v)),
        (key(), value()).prop_map(|(k, v)| Expr::Ne(k, v)),
        (key(), prop::collection::btree_set(value(), 0..3)).prop_map(|(k, v)| Expr::In(k, v)),
        (key(), prop::collection::btree_set(value(), 0..3)).prop_map(|(k, v)| Expr::NotIn(k, v)),
    ];
    leaf.prop_recursive(4, 24, 3, |inner| {
        prop_oneof![
            inner.clone().prop_map(|e| Expr::Not(Box::new(e))),
            prop::collection::vec(inner.clone(), 2..4).prop_map(Expr::And),
            prop::collection::vec(inner, 2..4).prop_map(Expr::Or),
        ]
    })
}

proptest! {
    #[test]
    fn display_parses_back_to_the_same_selector(e in expr()) {
        let s = Selector::from_expr(e);
        let text = s.to_string();
        let back = Selector::parse(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(back, s, "{}", text);
    }

    #[test]
    fn parsing_never_panics(s in "[a-z !=&|(){}',\"]{0,20}") {
        let _ = Selector::parse(&s);
    }

    #[test]
    fn label_selectors_match_as_kubernetes_defines_them(
        labels in prop::collection::btree_map(key(), value(), 0..4),
        match_labels in prop::collection::btree_map(key(), value(), 0..2),
        reqs in prop::collection::vec(
            (key(), 0..4usize, prop::collection::vec(value(), 1..3)),
            0..3,
        ),
    ) {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
        const OPS: [&str; 4] = ["In", "NotIn", "Exists", "DoesNotExist"];
        let reqs: Vec<LabelSelectorRequirement> = reqs
            .into_iter()
            .map(|(key, op, values)| LabelSelectorRequirement {
                key,
                operator: OPS[op].to_string(),
                values: (op < 2).then_some(values),
            })
            .collect();
        // The reference: the Kubernetes definition, written out directly.
        let expected = match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            && reqs.iter().all(|r| {
                let got = labels.get(&r.key);
                let vals = r.values.clone().unwrap_or_default();
                match r.operator.as_str() {
                    "In" => got.is_some_and(|g| vals.contains(g)),
                    "NotIn" => !got.is_some_and(|g| vals.contains(g)),
                    "Exists" => got.is_some(),
                    _ => got.is_none(),
                }
            });
        let ls = LabelSelector {
            match_labels: Some(match_labels),
            match_expressions: Some(reqs),
        };
        prop_assert_eq!(label_selector_matches(&ls, &labels), Ok(expected));
    }
}

#[test]
fn selectors_serialize_as_their_text() {
    let s = sel("role=='rr'");
    assert_eq!(serde_json::to_string(&s).unwrap(), r#""role == 'rr'""#);
    let back: Selector = serde_json::from_str(r#""role == 'rr'""#).unwrap();
    assert_eq!(back, s);
    let e = serde_json::from_str::<Selector>(r#""role = x""#).unwrap_err();
    assert!(e.to_string().contains("column 6"), "{e}");
}
