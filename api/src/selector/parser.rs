//! A hand-written recursive-descent parser for Calico's selector language.

use std::collections::BTreeSet;

use super::{Expr, SelectorError};

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    LParen,
    RParen,
    LBrace,
    RBrace,
    Comma,
    EqEq,
    NotEq,
    Bang,
    AndAnd,
    OrOr,
    Other(char),
    End,
}

/// A token and its 1-based column.
#[derive(Debug, Clone)]
struct Spanned {
    tok: Tok,
    col: usize,
}

fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-')
}

fn lex(input: &str) -> Result<Vec<Spanned>, (usize, String)> {
    let chars: Vec<char> = input.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let col = i + 1;
        let next = chars.get(i + 1).copied();
        let (tok, len) = match c {
            c if c.is_whitespace() => {
                i += 1;
                continue;
            }
            '(' => (Tok::LParen, 1),
            ')' => (Tok::RParen, 1),
            '{' => (Tok::LBrace, 1),
            '}' => (Tok::RBrace, 1),
            ',' => (Tok::Comma, 1),
            '=' if next == Some('=') => (Tok::EqEq, 2),
            '!' if next == Some('=') => (Tok::NotEq, 2),
            '!' => (Tok::Bang, 1),
            '&' if next == Some('&') => (Tok::AndAnd, 2),
            '|' if next == Some('|') => (Tok::OrOr, 2),
            '\'' | '"' => {
                let end = chars[i + 1..]
                    .iter()
                    .position(|&q| q == c)
                    .ok_or((col, "unterminated string".to_string()))?;
                let s: String = chars[i + 1..i + 1 + end].iter().collect();
                (Tok::Str(s), end + 2)
            }
            c if is_key_char(c) => {
                let len = chars[i..].iter().take_while(|&&c| is_key_char(c)).count();
                (Tok::Ident(chars[i..i + len].iter().collect()), len)
            }
            other => (Tok::Other(other), 1),
        };
        out.push(Spanned { tok, col });
        i += len;
    }
    out.push(Spanned {
        tok: Tok::End,
        col: chars.len() + 1,
    });
    Ok(out)
}

struct Parser {
    toks: Vec<Spanned>,
    pos: usize,
}

type PResult<T> = Result<T, (usize, String)>;

impl Parser {
    fn peek(&self) -> &Tok {
        &self.toks[self.pos].tok
    }

    fn peek_at(&self, n: usize) -> &Tok {
        let idx = (self.pos + n).min(self.toks.len() - 1);
        &self.toks[idx].tok
    }

    fn col(&self) -> usize {
        self.toks[self.pos].col
    }

    fn bump(&mut self) -> Tok {
        let t = self.toks[self.pos].tok.clone();
        if self.pos < self.toks.len() - 1 {
            self.pos += 1;
        }
        t
    }

    fn fail<T>(&self, what: &str) -> PResult<T> {
        Err((self.col(), format!("expected {what}")))
    }

    fn expect(&mut self, tok: Tok, what: &str) -> PResult<()> {
        if *self.peek() == tok {
            self.bump();
            Ok(())
        } else {
            self.fail(what)
        }
    }

    fn or(&mut self) -> PResult<Expr> {
        let mut items = vec![self.and()?];
        while *self.peek() == Tok::OrOr {
            self.bump();
            items.push(self.and()?);
        }
        Ok(if items.len() == 1 {
            items.remove(0)
        } else {
            Expr::Or(items)
        })
    }

    fn and(&mut self) -> PResult<Expr> {
        let mut items = vec![self.unary()?];
        while *self.peek() == Tok::AndAnd {
            self.bump();
            items.push(self.unary()?);
        }
        Ok(if items.len() == 1 {
            items.remove(0)
        } else {
            Expr::And(items)
        })
    }

    fn unary(&mut self) -> PResult<Expr> {
        if *self.peek() == Tok::Bang {
            self.bump();
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        self.primary()
    }

    fn primary(&mut self) -> PResult<Expr> {
        match self.peek().clone() {
            Tok::LParen => {
                self.bump();
                let e = self.or()?;
                self.expect(Tok::RParen, ")")?;
                Ok(e)
            }
            Tok::Ident(word) if word == "all" && *self.peek_at(1) == Tok::LParen => {
                self.bump();
                self.bump();
                self.expect(Tok::RParen, ") (all() takes no arguments)")?;
                Ok(Expr::All)
            }
            Tok::Ident(word) if word == "has" && *self.peek_at(1) == Tok::LParen => {
                self.bump();
                self.bump();
                let Tok::Ident(key) = self.peek().clone() else {
                    return self.fail("a label key");
                };
                self.bump();
                self.expect(Tok::RParen, ")")?;
                Ok(Expr::Has(key))
            }
            Tok::Ident(key) => {
                self.bump();
                self.comparison(key)
            }
            _ => self.fail("a label key, has(, all(, ! or ("),
        }
    }

    fn comparison(&mut self, key: String) -> PResult<Expr> {
        match self.peek().clone() {
            Tok::EqEq => {
                self.bump();
                Ok(Expr::Eq(key, self.value()?))
            }
            Tok::NotEq => {
                self.bump();
                Ok(Expr::Ne(key, self.value()?))
            }
            Tok::Ident(w) if w == "in" => {
                self.bump();
                Ok(Expr::In(key, self.set()?))
            }
            Tok::Ident(w) if w == "not" && *self.peek_at(1) == Tok::Ident("in".into()) => {
                self.bump();
                self.bump();
                Ok(Expr::NotIn(key, self.set()?))
            }
            _ => self.fail("==, !=, in or not in"),
        }
    }

    fn value(&mut self) -> PResult<String> {
        match self.peek().clone() {
            Tok::Str(s) => {
                self.bump();
                Ok(s)
            }
            _ => self.fail("a quoted value ('...' or \"...\")"),
        }
    }

    fn set(&mut self) -> PResult<BTreeSet<String>> {
        self.expect(Tok::LBrace, "{")?;
        let mut out = BTreeSet::new();
        if *self.peek() == Tok::RBrace {
            self.bump();
            return Ok(out);
        }
        loop {
            out.insert(self.value()?);
            match self.peek() {
                Tok::Comma => {
                    self.bump();
                }
                Tok::RBrace => {
                    self.bump();
                    return Ok(out);
                }
                _ => return self.fail(", or }"),
            }
        }
    }
}

/// Parses `input`; blank input is `all()`.
pub(super) fn parse(input: &str) -> Result<Expr, SelectorError> {
    let err = |(column, message): (usize, String)| SelectorError {
        selector: input.to_string(),
        column,
        message,
    };
    let toks = lex(input).map_err(err)?;
    let mut p = Parser { toks, pos: 0 };
    if *p.peek() == Tok::End {
        return Ok(Expr::All);
    }
    let e = p.or().map_err(err)?;
    if *p.peek() != Tok::End {
        return Err(err((
            p.col(),
            "expected &&, || or end of selector".to_string(),
        )));
    }
    Ok(e)
}
