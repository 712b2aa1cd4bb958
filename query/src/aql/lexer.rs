//! AQL tokens. Every character of the query belongs to a token, whitespace or a comment; any
//! other character is an error naming its line and column (the ancestor's lexer silently
//! dropped them).

use super::SyntaxError;

/// A token's kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    /// A name (keywords are names too; the parser matches them case-insensitively).
    Ident(String),
    /// A `` `quoted` `` name (never a keyword).
    Quoted(String),
    /// `@name`.
    Bind(String),
    /// `@@name`.
    CollectionBind(String),
    /// An integer literal.
    Int(i64),
    /// A number with a fraction or exponent (or an integer beyond i64).
    Float(f64),
    /// A string literal, escapes resolved.
    Str(String),
    /// An operator or punctuation.
    Sym(&'static str),
    /// The end of the query.
    Eof,
}

impl Tok {
    /// How errors name it.
    pub fn describe(&self) -> String {
        match self {
            Tok::Ident(s) => format!("`{s}`"),
            Tok::Quoted(s) => format!("`{s}`"),
            Tok::Bind(s) => format!("@{s}"),
            Tok::CollectionBind(s) => format!("@@{s}"),
            Tok::Int(n) => n.to_string(),
            Tok::Float(f) => f.to_string(),
            Tok::Str(s) => format!("{s:?}"),
            Tok::Sym(s) => format!("`{s}`"),
            Tok::Eof => "the end of the query".into(),
        }
    }
}

/// A token and where it starts (1-based line and column, in characters).
#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    /// The token.
    pub tok: Tok,
    /// Line.
    pub line: usize,
    /// Column.
    pub column: usize,
}

/// Longest first, so `..` wins over `.` and `<=` over `<`.
const SYMBOLS: [&str; 26] = [
    "[*]", "==", "!=", "<=", ">=", "=~", "!~", "&&", "||", "..", "=", "<", ">", "+", "-", "*", "/",
    "%", "!", "?", ":", ".", ",", "(", ")", "[",
];
const SINGLE: [&str; 3] = ["]", "{", "}"];

/// Splits `text` into tokens (the last is [`Tok::Eof`]).
pub fn tokens(text: &str) -> Result<Vec<Token>, SyntaxError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line, mut column) = (0usize, 1usize, 1usize);
    let advance = |i: &mut usize, line: &mut usize, column: &mut usize, n: usize| {
        for k in 0..n {
            if chars[*i + k] == '\n' {
                *line += 1;
                *column = 1;
            } else {
                *column += 1;
            }
        }
        *i += n;
    };
    while i < chars.len() {
        let c = chars[i];
        let (start_line, start_column) = (line, column);
        let err = |message: String| SyntaxError {
            line: start_line,
            column: start_column,
            message,
        };
        if c.is_whitespace() {
            advance(&mut i, &mut line, &mut column, 1);
            continue;
        }
        if c == '/' && chars.get(i + 1) == Some(&'/') {
            while i < chars.len() && chars[i] != '\n' {
                advance(&mut i, &mut line, &mut column, 1);
            }
            continue;
        }
        if c == '/' && chars.get(i + 1) == Some(&'*') {
            advance(&mut i, &mut line, &mut column, 2);
            loop {
                if i + 1 >= chars.len() {
                    return Err(err("unterminated /* comment".into()));
                }
                if chars[i] == '*' && chars[i + 1] == '/' {
                    advance(&mut i, &mut line, &mut column, 2);
                    break;
                }
                advance(&mut i, &mut line, &mut column, 1);
            }
            continue;
        }
        let tok = if c.is_alphabetic() || c == '_' {
            let n = chars[i..]
                .iter()
                .take_while(|c| c.is_alphanumeric() || **c == '_')
                .count();
            let name: String = chars[i..i + n].iter().collect();
            advance(&mut i, &mut line, &mut column, n);
            Tok::Ident(name)
        } else if c == '`' || c == '´' {
            let n = chars[i + 1..].iter().take_while(|&&x| x != c).count();
            if i + 1 + n >= chars.len() {
                return Err(err("unterminated quoted name".into()));
            }
            let name: String = chars[i + 1..i + 1 + n].iter().collect();
            if name.is_empty() {
                return Err(err("an empty quoted name".into()));
            }
            advance(&mut i, &mut line, &mut column, n + 2);
            Tok::Quoted(name)
        } else if c == '@' {
            let at = if chars.get(i + 1) == Some(&'@') { 2 } else { 1 };
            let n = chars[i + at..]
                .iter()
                .take_while(|c| c.is_alphanumeric() || **c == '_')
                .count();
            if n == 0 {
                return Err(err(format!(
                    "expected a bind parameter name after `{}`",
                    "@".repeat(at)
                )));
            }
            let name: String = chars[i + at..i + at + n].iter().collect();
            advance(&mut i, &mut line, &mut column, at + n);
            if at == 2 {
                Tok::CollectionBind(name)
            } else {
                Tok::Bind(name)
            }
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit()) && {
                // `1..2` is a range, not 1. followed by .2
                !matches!(
                    out.last(),
                    Some(Token {
                        tok: Tok::Int(_),
                        ..
                    })
                )
            })
        {
            let mut n = chars[i..].iter().take_while(|c| c.is_ascii_digit()).count();
            let mut float = false;
            if chars.get(i + n) == Some(&'.')
                && chars.get(i + n + 1).is_some_and(|d| d.is_ascii_digit())
            {
                float = true;
                n += 1 + chars[i + n + 1..]
                    .iter()
                    .take_while(|c| c.is_ascii_digit())
                    .count();
            }
            if matches!(chars.get(i + n), Some('e' | 'E')) {
                let sign = usize::from(matches!(chars.get(i + n + 1), Some('+' | '-')));
                let digits = chars[(i + n + 1 + sign).min(chars.len())..]
                    .iter()
                    .take_while(|c| c.is_ascii_digit())
                    .count();
                if digits == 0 {
                    return Err(err("expected digits in the number's exponent".into()));
                }
                float = true;
                n += 1 + sign + digits;
            }
            let text: String = chars[i..i + n].iter().collect();
            if chars
                .get(i + n)
                .is_some_and(|c| c.is_alphabetic() || *c == '_')
            {
                return Err(err(format!(
                    "a number followed by {:?}: separate them with a space or an operator",
                    chars[i + n]
                )));
            }
            advance(&mut i, &mut line, &mut column, n);
            match (float, text.parse::<i64>()) {
                (false, Ok(v)) => Tok::Int(v),
                _ => Tok::Float(
                    text.parse::<f64>()
                        .ok()
                        .filter(|f| f.is_finite())
                        .ok_or_else(|| err(format!("number {text} is out of range")))?,
                ),
            }
        } else if c == '"' || c == '\'' {
            let mut value = String::new();
            let mut k = i + 1;
            loop {
                match chars.get(k) {
                    None => return Err(err("unterminated string".into())),
                    Some(&q) if q == c => break,
                    Some('\\') => {
                        let escaped = match chars.get(k + 1) {
                            Some('n') => '\n',
                            Some('t') => '\t',
                            Some('r') => '\r',
                            Some('b') => '\u{8}',
                            Some('f') => '\u{c}',
                            Some('/') => '/',
                            Some('\\') => '\\',
                            Some('"') => '"',
                            Some('\'') => '\'',
                            Some('u') => {
                                let hex: String = chars
                                    .get(k + 2..k + 6)
                                    .map(|h| h.iter().collect())
                                    .unwrap_or_default();
                                let code = u32::from_str_radix(&hex, 16)
                                    .ok()
                                    .and_then(char::from_u32)
                                    .ok_or_else(|| {
                                        err(format!("invalid \\u escape {hex:?} in a string"))
                                    })?;
                                value.push(code);
                                k += 6;
                                continue;
                            }
                            Some(other) => {
                                return Err(err(format!("unknown escape \\{other} in a string")));
                            }
                            None => return Err(err("unterminated string".into())),
                        };
                        value.push(escaped);
                        k += 2;
                    }
                    Some(&other) => {
                        value.push(other);
                        k += 1;
                    }
                }
            }
            let n = k + 1 - i;
            advance(&mut i, &mut line, &mut column, n);
            Tok::Str(value)
        } else if let Some(sym) = SYMBOLS.iter().chain(SINGLE.iter()).find(|s| {
            chars[i..]
                .iter()
                .take(s.chars().count())
                .copied()
                .eq(s.chars())
        }) {
            advance(&mut i, &mut line, &mut column, sym.chars().count());
            Tok::Sym(sym)
        } else {
            return Err(err(format!("unexpected character {c:?}")));
        };
        out.push(Token {
            tok,
            line: start_line,
            column: start_column,
        });
    }
    out.push(Token {
        tok: Tok::Eof,
        line,
        column,
    });
    Ok(out)
}
