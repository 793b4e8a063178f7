"""runner/error_codes.py is the one list of error codes: every code the source uses is listed
there, and every code listed is used (so a condition cannot quietly get a second code).

The scan parses runner/ with `ast` rather than matching text, so a code is seen however it is
passed: `code="x"`, positionally to any function that has a `code` parameter (`_bad(msg, param,
"x")`, `c.add("x", ...)`, `error_line(id, cid, "x", msg)`), as a parameter's default, assigned to a
`code` variable or attribute (class attributes of ApiError subclasses, dataclass fields), as a
dict's "code" entry, through a module constant (MODEL_ENDPOINT_MISMATCH), or a table looked up
into a `code` (api/app.py's {404: ...}.get, writer.py's _REASONS). Anything else in a code position
(an f-string, a call, a variable not named `code`) fails test_every_code_position_is_followed, so
a new way of passing codes has to be taught here before it can hide a code.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

from runner.error_codes import CODES

SOURCE = Path(__file__).resolve().parents[1] / "runner"


@dataclass
class Scan:
    used: dict[str, set[str]] = field(default_factory=dict)  # code -> "file:line" where it is written
    unfollowed: list[str] = field(default_factory=list)  # "file:line: expr" in a code position


def _parse(files: dict[str, str]) -> dict[str, ast.Module]:
    return {name: ast.parse(text, filename=name) for name, text in files.items()}


@dataclass
class Positions:
    """Where each callable takes `code` positionally, as a caller counts (a method's self is not
    passed): functions per module, methods by name."""

    functions: dict[tuple[str, str], int] = field(default_factory=dict)  # (module file, name) -> index
    methods: dict[tuple[str, str], int] = field(default_factory=dict)  # (module file, name) -> index
    imports: dict[tuple[str, str], str] = field(default_factory=dict)  # (module file, name) -> its module file

    def of_call(self, where: str, func: ast.expr) -> tuple[int | None, bool]:
        """(index of `code` in a call of `func` from module `where`, whether the callee is known).
        A call on another object (c.add, backend.add) cannot be told apart by name from a set's
        add, so only literal strings (or string constants) are taken from it (known=False)."""
        if isinstance(func, ast.Name):
            module = self.imports.get((where, func.id), where)
            return self.functions.get((module, func.id)), True
        if isinstance(func, ast.Attribute):
            if isinstance(func.value, ast.Name) and func.value.id == "self":
                return self.methods.get((where, func.attr)), True
            hits = {i for (_, name), i in self.methods.items() if name == func.attr}
            return (hits.pop() if len(hits) == 1 else None), False
        return None, False


def _code_index(fn: ast.FunctionDef, *, method: bool) -> int | None:
    params = [a.arg for a in (*fn.args.posonlyargs, *fn.args.args)]
    if method and params and params[0] in ("self", "cls"):
        params = params[1:]
    return params.index("code") if "code" in params else None


def _module_file(module: str) -> str:
    return module.removeprefix("runner.").replace(".", "/") + ".py"


def _positions(trees: dict[str, ast.Module]) -> Positions:
    out = Positions()
    for where, tree in trees.items():
        methods = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                for item in node.body:
                    if isinstance(item, ast.FunctionDef):
                        methods.add(item)
                        i = _code_index(item, method=True)
                        if i is not None:
                            key = (where, node.name) if item.name == "__init__" else (where, item.name)
                            (out.functions if item.name == "__init__" else out.methods)[key] = i
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("runner."):
                for alias in node.names:
                    out.imports[(where, alias.asname or alias.name)] = _module_file(node.module)
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node not in methods:
                i = _code_index(node, method=False)
                if i is not None:
                    out.functions[(where, node.name)] = i
    return out


def _tables(trees: dict[str, ast.Module]) -> dict[str, ast.expr]:
    """Module-level NAME = <literal>: string constants and lookup tables a code may come from."""
    out: dict[str, ast.expr] = {}
    for tree in trees.values():
        for node in tree.body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                if isinstance(node.value, ast.Constant | ast.Dict | ast.Tuple):
                    out[node.targets[0].id] = node.value
    return out


def _is_code_name(name: str) -> bool:
    return name == "code" or name.endswith("_code")


class _Collector(ast.NodeVisitor):
    def __init__(self, where: str, source: str, positions: Positions, tables: dict[str, ast.expr],
                 scan: Scan) -> None:
        self.where, self.source, self.positions, self.tables, self.scan = where, source, positions, tables, scan

    # -- what an expression in a code position can be ------------------------------------------------

    def _values(self, node: ast.expr, index: int | None = None) -> list[ast.expr] | None:
        """The literal expressions `node` may stand for (index: the element of a tuple it picks)."""
        if index is not None:
            if isinstance(node, ast.Tuple) and index < len(node.elts):
                return [node.elts[index]]
            if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name):
                table = self.tables.get(node.value.id)
                if isinstance(table, ast.Dict):
                    return [v.elts[index] for v in table.values if isinstance(v, ast.Tuple) and index < len(v.elts)]
            return None
        if isinstance(node, ast.IfExp):
            body, orelse = self._values(node.body), self._values(node.orelse)
            return None if body is None or orelse is None else body + orelse
        if isinstance(node, ast.Name) and isinstance(self.tables.get(node.id), ast.Constant):
            return [self.tables[node.id]]
        if isinstance(node, ast.Attribute) and isinstance(self.tables.get(node.attr), ast.Constant):
            return [self.tables[node.attr]]
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
                and isinstance(node.func.value, ast.Dict)):
            return list(node.func.value.values)  # {404: "unknown_url", ...}.get(status)
        return [node]

    def _record(self, node: ast.expr | None, index: int | None = None, *, strict: bool = True) -> None:
        """Note the codes `node` can be. strict: it is an argument, so whatever it is must be
        followed; otherwise (a `code` variable, a dict's "code") it may also hold a value read from
        elsewhere (an exit code, a schema, exc.code), and only a code built from pieces is flagged."""
        if node is None:
            return
        values = self._values(node, index)
        for v in values if values is not None else [node]:
            if isinstance(v, ast.Constant) and isinstance(v.value, str):
                self.scan.used.setdefault(v.value, set()).add(f"{self.where}:{v.lineno}")
            elif isinstance(v, ast.Constant) and v.value is None:
                pass
            elif isinstance(v, ast.Name) and _is_code_name(v.id) and values is not None:
                pass  # a variable handing on a code: its assignments and parameters are scanned
            elif isinstance(v, ast.Attribute) and _is_code_name(v.attr) and values is not None:
                pass  # exc.code, self.code: the code of an error built where it was scanned
            elif strict or isinstance(v, ast.JoinedStr | ast.BinOp):
                segment = ast.get_source_segment(self.source, v) or ast.dump(v)
                self.scan.unfollowed.append(f"{self.where}:{v.lineno}: {segment[:80]}")

    # -- the code positions ------------------------------------------------------------------------

    def visit_Call(self, node: ast.Call) -> None:
        for kw in node.keywords:
            if kw.arg == "code":
                self._record(kw.value)
        i, known = self.positions.of_call(self.where, node.func)
        if i is not None and i < len(node.args) and not any(isinstance(a, ast.Starred) for a in node.args[: i + 1]):
            arg = node.args[i]
            literal = all(isinstance(v, ast.Constant) and isinstance(v.value, str) for v in self._values(arg) or [arg])
            if known or literal:
                self._record(arg)
        self.generic_visit(node)

    def _targets(self, targets: list[ast.expr], value: ast.expr | None) -> None:
        for target in targets:
            if isinstance(target, ast.Name | ast.Attribute):
                name = target.id if isinstance(target, ast.Name) else target.attr
                if name == "code":
                    self._record(value, strict=False)
            elif isinstance(target, ast.Tuple) and value is not None:
                for i, elt in enumerate(target.elts):
                    if isinstance(elt, ast.Name) and elt.id == "code":
                        self._record(value, index=i, strict=False)

    def visit_Assign(self, node: ast.Assign) -> None:
        self._targets(node.targets, node.value)
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self._targets([node.target], node.value)
        self.generic_visit(node)

    def visit_Dict(self, node: ast.Dict) -> None:
        for key, value in zip(node.keys, node.values, strict=True):
            if isinstance(key, ast.Constant) and key.value == "code":
                self._record(value, strict=False)
        self.generic_visit(node)

    def visit_arguments(self, node: ast.arguments) -> None:
        positional = [*node.posonlyargs, *node.args]
        defaults = [None] * (len(positional) - len(node.defaults)) + list(node.defaults)
        for arg, default in [*zip(positional, defaults, strict=True), *zip(node.kwonlyargs, node.kw_defaults,
                                                                           strict=True)]:
            if arg.arg == "code":
                self._record(default)
        self.generic_visit(node)


def scan(files: dict[str, str]) -> Scan:
    trees = _parse(files)
    positions, tables, result = _positions(trees), _tables(trees), Scan()
    for name, tree in trees.items():
        _Collector(name, files[name], positions, tables, result).visit(tree)
    return result


def _runner() -> Scan:
    files = {str(p.relative_to(SOURCE)): p.read_text(encoding="utf-8") for p in sorted(SOURCE.rglob("*.py"))
             if p.name != "error_codes.py"}
    return scan(files)


def test_every_code_used_is_listed() -> None:
    unlisted = {code: sorted(where) for code, where in _runner().used.items() if code not in CODES}
    assert unlisted == {}, "add these to runner/error_codes.py (or use the code already listed for the condition)"


def test_every_code_listed_is_used() -> None:
    assert sorted(set(CODES) - set(_runner().used)) == []


def test_every_code_position_is_followed() -> None:
    assert _runner().unfollowed == [], "pass codes as literals (or teach this scan the new form)"


def test_the_scan_finds_codes_in_each_form() -> None:
    files = {"helpers.py": (
        "MISMATCH = 'c_constant'\n"
        "_REASONS = {'a': ('c_tuple_table', 'msg')}\n"
        "def _bad(message, param, code='c_default'):\n"
        "    return LineError(message, code=code, param=param)\n"
        "class Checks:\n"
        "    def add(self, code, message, *, line):\n"
        "        self.errors.append({'code': code})\n"
        "class Gone(ApiError):\n"
        "    code = 'c_class_attribute'\n"
        "def reasons(reason, status, c):\n"
        "    code, message = _REASONS[reason]\n"
        "    error_line('id', 'cid', code, message)\n"
        "    code = {404: 'c_table_get'}.get(status)\n"
        "    _bad('m', 'p', 'c_positional')\n"
        "    _bad('m', 'p', 'c_yes' if status else 'c_no')\n"
        "    c.add('c_method_positional', 'm', line=1)\n"
        "    c.add(MISMATCH, 'm', line=1)\n"
        "    LineError('m', code='c_keyword')\n"
        "    return {'code': 'c_dict'}\n"
    ), "wire.py": "def error_line(line_id, custom_id, code, message):\n    return {'code': code}\n"}
    result = scan(files)
    assert sorted(result.used) == sorted([
        "c_constant", "c_tuple_table", "c_default", "c_class_attribute", "c_table_get", "c_positional", "c_yes",
        "c_no", "c_method_positional", "c_keyword", "c_dict"])
    assert result.unfollowed == []


def test_the_scan_flags_a_code_it_cannot_follow() -> None:
    result = scan({"m.py": "def f(kind, reason, seen, proc):\n"
                           "    LineError('m', code=f'bad_{kind}')\n"
                           "    LineError('m', code=reason)\n"
                           "    LineError('m', code=pick(kind))\n"
                           "    code = 'c_' + kind\n"
                           "    code = proc.wait()\n"  # an exit code: a value read from elsewhere
                           "    seen.add(reason)\n"  # a set's add, not validation's
                           "    _bad('keyword', '/path', 'a reason, not a code')\n",  # schema_instance's _bad
                  "checks.py": "class Checks:\n    def add(self, code, message):\n        pass\n",
                  "schema.py": "def _bad(keyword, path, reason):\n    pass\n"})
    assert [u.split(": ", 1)[1] for u in result.unfollowed] == [
        "f'bad_{kind}'", "reason", "pick(kind)", "'c_' + kind"]
    assert result.used == {}


def test_the_scan_finds_runner_codes_in_each_form() -> None:
    used = _runner().used
    for code in ("invalid_api_key", "missing_custom_id", "file_not_found", "engine_error", "batch_cancelled",
                 "batch_expired", "method_not_allowed", "unknown_url", "model_load_failed",
                 "model_endpoint_mismatch", "unsupported_parameter", "unknown_parameter"):
        assert code in used, code
