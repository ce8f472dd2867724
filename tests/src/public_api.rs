//! A crate's public API as sorted text lines, one per item, from its
//! rustdoc JSON (`RUSTC_BOOTSTRAP=1 cargo rustdoc --lib -- -Zunstable-options
//! --output-format json`). `tests/tests/public_api.rs` compares the lines
//! with the listing committed in `tests/public-api/`, so a change to the
//! API shows as a diff in review and a removal needs a version bump
//! (`docs/api-changes.md`).
//!
//! Every item is listed at each public path it is reachable by (a type
//! re-exported at the root and public in its module is listed twice), with
//! its signature: functions and methods with their arguments and result,
//! structs with their public fields, enums with their variants, traits
//! with their items, and the traits each type implements (auto traits
//! such as `Send` included, blanket implementations left out). Types are
//! named by their canonical path where rustdoc knows it. Shapes of the
//! JSON this module does not know are rendered as `?`, never a panic, so
//! a newer format shows as a diff rather than a crash.

use std::collections::BTreeSet;

use serde_json::Value;

/// The public API of the crate described by a rustdoc JSON document.
pub fn list(doc: &Value) -> Vec<String> {
    let mut l = Lister {
        doc,
        out: BTreeSet::new(),
        seen_modules: BTreeSet::new(),
    };
    let root = doc["root"].to_string();
    let name = l.item(&root)["name"]
        .as_str()
        .unwrap_or("crate")
        .to_string();
    l.module(&root, &name);
    l.out.into_iter().collect()
}

struct Lister<'a> {
    doc: &'a Value,
    out: BTreeSet<String>,
    /// (module id, path): a glob or re-export cycle is walked once.
    seen_modules: BTreeSet<(String, String)>,
}

impl<'a> Lister<'a> {
    fn item(&self, id: &str) -> &'a Value {
        &self.doc["index"][id]
    }

    fn emit(&mut self, line: String) {
        self.out.insert(line);
    }

    fn module(&mut self, id: &str, path: &str) {
        if !self.seen_modules.insert((id.to_string(), path.to_string())) {
            return;
        }
        let items = self.item(id)["inner"]["module"]["items"].as_array();
        for child in items.into_iter().flatten() {
            let child = child.to_string();
            let item = self.item(&child);
            if item["visibility"] != "public" {
                continue;
            }
            if let Some(u) = item["inner"].get("use") {
                self.reexport(u, path);
                continue;
            }
            let Some(name) = item["name"].as_str() else {
                continue;
            };
            self.named(&child, &format!("{path}::{name}"));
        }
    }

    /// A `pub use`: the item again under this path, or, for another
    /// crate's item, the re-export itself.
    fn reexport(&mut self, u: &Value, path: &str) {
        let target = u["id"].to_string();
        let local = !self.item(&target).is_null();
        if u["is_glob"] == true {
            if local {
                self.module(&target, path);
            } else {
                self.emit(format!("pub use {path}::* = {}::*", str_of(&u["source"])));
            }
            return;
        }
        let at = format!("{path}::{}", str_of(&u["name"]));
        if local {
            self.named(&target, &at);
        } else {
            let source = self
                .canonical(&u["id"])
                .unwrap_or_else(|| str_of(&u["source"]));
            self.emit(format!("pub use {at} = {source}"));
        }
    }

    /// One named item at `path`, and what hangs off it.
    fn named(&mut self, id: &str, path: &str) {
        let item = self.item(id);
        let Some((kind, inner)) = item["inner"].as_object().and_then(|o| o.iter().next()) else {
            return;
        };
        let g = |v: &Value| self.generics(v);
        match kind.as_str() {
            "module" => {
                self.emit(format!("mod {path}"));
                self.module(id, path);
            }
            "function" => {
                let f = self.function(inner, path);
                self.emit(f);
            }
            "struct" => {
                self.emit(format!("struct {path}{}", g(&inner["generics"])));
                self.fields(&inner["kind"], path);
                self.impls(&inner["impls"], path);
            }
            "union" => {
                self.emit(format!("union {path}{}", g(&inner["generics"])));
                self.fields(&inner["kind"], path);
                self.impls(&inner["impls"], path);
            }
            "enum" => {
                self.emit(format!("enum {path}{}", g(&inner["generics"])));
                for v in inner["variants"].as_array().into_iter().flatten() {
                    self.variant(&v.to_string(), path);
                }
                self.impls(&inner["impls"], path);
            }
            "trait" => {
                let bounds = self.bounds(&inner["bounds"]);
                let colon = if bounds.is_empty() { "" } else { ": " };
                self.emit(format!(
                    "trait {path}{}{colon}{bounds}",
                    g(&inner["generics"])
                ));
                for i in inner["items"].as_array().into_iter().flatten() {
                    self.assoc(&i.to_string(), path);
                }
            }
            "type_alias" => {
                let t = self.ty(&inner["type"]);
                self.emit(format!("type {path}{} = {t}", g(&inner["generics"])));
            }
            "constant" => {
                let t = self.ty(&inner["type"]);
                self.emit(format!("const {path}: {t}"));
            }
            "static" => {
                let m = if inner["is_mutable"] == true {
                    "mut "
                } else {
                    ""
                };
                let t = self.ty(&inner["type"]);
                self.emit(format!("static {m}{path}: {t}"));
            }
            "macro" | "proc_macro" => self.emit(format!("macro {path}")),
            other => self.emit(format!("{other} {path}")),
        }
    }

    fn fields(&mut self, kind: &Value, path: &str) {
        let ids: Vec<String> = match kind {
            Value::Object(o) if o.contains_key("plain") => o["plain"]["fields"]
                .as_array()
                .into_iter()
                .flatten()
                .map(Value::to_string)
                .collect(),
            Value::Object(o) if o.contains_key("tuple") => o["tuple"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|v| !v.is_null())
                .map(Value::to_string)
                .collect(),
            _ => Vec::new(),
        };
        for id in ids {
            let f = self.item(&id);
            if f["visibility"] == "public" {
                let t = self.ty(&f["inner"]["struct_field"]);
                self.emit(format!("field {path}::{}: {t}", str_of(&f["name"])));
            }
        }
    }

    fn variant(&mut self, id: &str, path: &str) {
        let v = self.item(id);
        let name = format!("{path}::{}", str_of(&v["name"]));
        let kind = &v["inner"]["variant"]["kind"];
        let shape = match kind {
            Value::Object(o) if o.contains_key("tuple") => {
                let parts: Vec<String> = o["tuple"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|f| match f {
                        Value::Null => "_".to_string(),
                        f => self.ty(&self.item(&f.to_string())["inner"]["struct_field"]),
                    })
                    .collect();
                format!("({})", parts.join(", "))
            }
            Value::Object(o) if o.contains_key("struct") => {
                let parts: Vec<String> = o["struct"]["fields"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|f| {
                        let f = self.item(&f.to_string());
                        format!(
                            "{}: {}",
                            str_of(&f["name"]),
                            self.ty(&f["inner"]["struct_field"])
                        )
                    })
                    .collect();
                format!(" {{ {} }}", parts.join(", "))
            }
            _ => String::new(),
        };
        self.emit(format!("variant {name}{shape}"));
    }

    /// A type's impls: inherent methods and constants, and each trait
    /// implemented (not the blanket ones every type gets).
    fn impls(&mut self, ids: &Value, path: &str) {
        for id in ids.as_array().into_iter().flatten() {
            let imp = &self.item(&id.to_string())["inner"]["impl"];
            if !imp["blanket_impl"].is_null() {
                continue;
            }
            if imp["trait"].is_null() {
                for i in imp["items"].as_array().into_iter().flatten() {
                    let i = i.to_string();
                    if self.item(&i)["visibility"] == "public" {
                        self.assoc(&i, path);
                    }
                }
            } else {
                let neg = if imp["is_negative"] == true { "!" } else { "" };
                let t = self.path(&imp["trait"]);
                let generics = self.generics(&imp["generics"]);
                let for_ = self.ty(&imp["for"]);
                self.emit(format!("impl{generics} {neg}{t} for {for_}"));
            }
        }
    }

    /// An associated item (method, constant, type) under `path`.
    fn assoc(&mut self, id: &str, path: &str) {
        let item = self.item(id);
        let name = format!("{path}::{}", str_of(&item["name"]));
        let inner = &item["inner"];
        let line = if let Some(f) = inner.get("function") {
            self.function(f, &name)
        } else if let Some(c) = inner.get("assoc_const") {
            format!("const {name}: {}", self.ty(&c["type"]))
        } else if let Some(t) = inner.get("assoc_type") {
            let bounds = self.bounds(&t["bounds"]);
            let colon = if bounds.is_empty() { "" } else { ": " };
            let eq = match &t["type"] {
                Value::Null => String::new(),
                ty => format!(" = {}", self.ty(ty)),
            };
            format!("type {name}{colon}{bounds}{eq}")
        } else {
            format!("? {name}")
        };
        self.emit(line);
    }

    fn function(&self, f: &Value, path: &str) -> String {
        let h = &f["header"];
        let mut q = String::new();
        for (flag, word) in [
            ("is_const", "const "),
            ("is_async", "async "),
            ("is_unsafe", "unsafe "),
        ] {
            if h[flag] == true {
                q.push_str(word);
            }
        }
        let args: Vec<String> = f["sig"]["inputs"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| format!("{}: {}", str_of(&a[0]), self.ty(&a[1])))
            .collect();
        let out = match &f["sig"]["output"] {
            Value::Null => String::new(),
            t => format!(" -> {}", self.ty(t)),
        };
        let generics = self.generics(&f["generics"]);
        let wh = self.where_clause(&f["generics"]);
        format!("{q}fn {path}{generics}({}){out}{wh}", args.join(", "))
    }

    /// `<'a, T: Bound, const N: usize>`, synthetic (`impl Trait`) params left out.
    fn generics(&self, g: &Value) -> String {
        let params: Vec<String> = g["params"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| {
                let name = str_of(&p["name"]);
                let kind = &p["kind"];
                if let Some(t) = kind.get("type") {
                    if t["is_synthetic"] == true {
                        return None;
                    }
                    let b = self.bounds(&t["bounds"]);
                    return Some(if b.is_empty() {
                        name
                    } else {
                        format!("{name}: {b}")
                    });
                }
                if let Some(c) = kind.get("const") {
                    return Some(format!("const {name}: {}", self.ty(&c["type"])));
                }
                Some(name)
            })
            .collect();
        if params.is_empty() {
            String::new()
        } else {
            format!("<{}>", params.join(", "))
        }
    }

    fn where_clause(&self, g: &Value) -> String {
        let preds: Vec<String> = g["where_predicates"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| match p.get("bound_predicate") {
                Some(b) => format!("{}: {}", self.ty(&b["type"]), self.bounds(&b["bounds"])),
                None => "?".to_string(),
            })
            .collect();
        if preds.is_empty() {
            String::new()
        } else {
            format!(" where {}", preds.join(", "))
        }
    }

    fn bounds(&self, b: &Value) -> String {
        let parts: Vec<String> = b
            .as_array()
            .into_iter()
            .flatten()
            .map(|b| {
                if let Some(t) = b.get("trait_bound") {
                    let m = if t["modifier"] == "maybe" { "?" } else { "" };
                    format!("{m}{}", self.path(&t["trait"]))
                } else if let Some(o) = b.get("outlives") {
                    str_of(o)
                } else {
                    "?".to_string()
                }
            })
            .collect();
        parts.join(" + ")
    }

    /// The canonical path of an item rustdoc knows (`paths`), if any.
    fn canonical(&self, id: &Value) -> Option<String> {
        let parts = self.doc["paths"][id.to_string()]["path"].as_array()?;
        let parts: Vec<&str> = parts.iter().filter_map(Value::as_str).collect();
        Some(parts.join("::"))
    }

    /// A path with its generic arguments: `Option<T>`, `Fn(u8) -> bool`.
    fn path(&self, p: &Value) -> String {
        let name = self
            .canonical(&p["id"])
            .unwrap_or_else(|| str_of(&p["path"]));
        let args = &p["args"];
        if let Some(a) = args.get("angle_bracketed") {
            let mut parts: Vec<String> = a["args"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|g| {
                    if let Some(t) = g.get("type") {
                        self.ty(t)
                    } else if let Some(l) = g.get("lifetime") {
                        str_of(l)
                    } else if let Some(c) = g.get("const") {
                        str_of(&c["expr"])
                    } else {
                        "_".to_string()
                    }
                })
                .collect();
            for c in a["constraints"].as_array().into_iter().flatten() {
                let b = &c["binding"];
                let rhs = if let Some(t) = b.get("equality").and_then(|e| e.get("type")) {
                    format!(" = {}", self.ty(t))
                } else if let Some(bs) = b.get("constraint") {
                    format!(": {}", self.bounds(bs))
                } else {
                    " = ?".to_string()
                };
                parts.push(format!("{}{rhs}", str_of(&c["name"])));
            }
            if parts.is_empty() {
                name
            } else {
                format!("{name}<{}>", parts.join(", "))
            }
        } else if let Some(p) = args.get("parenthesized") {
            let inputs: Vec<String> = p["inputs"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| self.ty(t))
                .collect();
            let out = match &p["output"] {
                Value::Null => String::new(),
                t => format!(" -> {}", self.ty(t)),
            };
            format!("{name}({}){out}", inputs.join(", "))
        } else {
            name
        }
    }

    fn ty(&self, t: &Value) -> String {
        let Some((kind, v)) = t.as_object().and_then(|o| o.iter().next()) else {
            return match t.as_str() {
                Some("infer") => "_".to_string(),
                _ => "?".to_string(),
            };
        };
        match kind.as_str() {
            "resolved_path" => self.path(v),
            "generic" | "primitive" => str_of(v),
            "tuple" => {
                let parts: Vec<String> = v
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|t| self.ty(t))
                    .collect();
                format!("({})", parts.join(", "))
            }
            "slice" => format!("[{}]", self.ty(v)),
            "array" => format!("[{}; {}]", self.ty(&v["type"]), str_of(&v["len"])),
            "borrowed_ref" => {
                let l = match &v["lifetime"] {
                    Value::String(l) => format!("{l} "),
                    _ => String::new(),
                };
                let m = if v["is_mutable"] == true { "mut " } else { "" };
                format!("&{l}{m}{}", self.ty(&v["type"]))
            }
            "raw_pointer" => {
                let m = if v["is_mutable"] == true {
                    "mut"
                } else {
                    "const"
                };
                format!("*{m} {}", self.ty(&v["type"]))
            }
            "qualified_path" => {
                let self_ty = self.ty(&v["self_type"]);
                let name = str_of(&v["name"]);
                match &v["trait"] {
                    Value::Null => format!("{self_ty}::{name}"),
                    tr => format!("<{self_ty} as {}>::{name}", self.path(tr)),
                }
            }
            "impl_trait" => format!("impl {}", self.bounds(v)),
            "dyn_trait" => {
                let mut parts: Vec<String> = v["traits"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| self.path(&p["trait"]))
                    .collect();
                if let Value::String(l) = &v["lifetime"] {
                    parts.push(l.clone());
                }
                format!("dyn {}", parts.join(" + "))
            }
            "function_pointer" => {
                let f =
                    serde_json::json!({ "sig": v["sig"], "header": v["header"], "generics": {} });
                self.function(&f, "")
            }
            "pat" => self.ty(&v["type"]),
            _ => "?".to_string(),
        }
    }
}

/// A JSON string as text (anything else as its JSON).
fn str_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        v => v.to_string(),
    }
}
