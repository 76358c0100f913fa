"""Cross-compile the edgekit runner firmware with real TFLM for the emulated Cortex-M4.

The firmware is ``firmware_templates/qemu-m4`` (board support, startup, main) + the protocol core
(``firmware_templates/core``) + the TFLM runner the Arduino and PlatformIO projects use
(``firmware_templates/arduino/edgekit_runner/ek_tflm_runner.cpp``, the same file) + TFLM and
CMSIS-NN from a source tree the user has (:mod:`edgekit.tflm.tree`).

Only the tree's sources this firmware needs are compiled. The set starts empty and grows from what
the linker reports as undefined: each undefined symbol is looked up among the tree's candidate
sources (CMSIS-NN kernels in place of reference ones where the tree has both), the files that
define it are compiled and added, and the link runs again. Objects are cached per tree, compiler
and flags (``<cache>/tflm/<key>/``) and the resolved file set per op set, so the next model with the
same ops links in seconds, and a new op compiles only its own kernel. Every compiler, archiver and
linker run goes through the seam (:func:`edgekit.runners.seam.run_tool`), in parallel.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from edgekit.errors import ToolFailed, UnsupportedModelError
from edgekit.runners import seam

CROSS = "arm-none-eabi-"
COMPILE_TIMEOUT_S = 600.0
LINK_TIMEOUT_S = 300.0
MAX_LINK_ROUNDS = 16
ELF_NAME = "edgekit-tflm.elf"
FORMAT_VERSION = 1                 # bump when the build layout changes (invalidates cached firmware)

_UNDEFINED = re.compile(r"undefined reference to [`']([^'\n]+)'")
_REGISTER = re.compile(r"\bRegister_(\w+)\s*\(")
# folders of tensorflow/lite/micro that hold portable code (others are ports to other platforms)
_MICRO_SUBDIRS = ("arena_allocator", "memory_planner", "tflite_bridge", "kernels")
_SKIP_PARTS = {"examples", "tools", "testing", "benchmarks", "integration_tests", "python", "test_data",
               "experimental", "test_data_generation", "docs"}
_SKIP_NAME = re.compile(r"(_test|test_helper|mock_|fake_|kernel_runner|debug_log|system_setup|all_ops_resolver"
                        r"|_f16|hexdump)")

ToolFn = Callable[..., seam.ToolResult]
LogFn = Callable[[str], None]
ProgressFn = Callable[[str, int, int], None]


@dataclass(frozen=True)
class CpuTarget:
    """The core the firmware is compiled for (what QEMU emulates, and what the board has)."""

    cpu: str = "cortex-m4"
    fpu: str | None = "fpv4-sp-d16"
    float_abi: str = "hard"

    @property
    def flags(self) -> list[str]:
        out = [f"-mcpu={self.cpu}", "-mthumb", f"-mfloat-abi={self.float_abi}"]
        if self.fpu and self.float_abi != "soft":
            out.append(f"-mfpu={self.fpu}")
        return out

    @classmethod
    def from_board(cls, board) -> "CpuTarget":
        emu = getattr(board, "emulator", None) or {}
        return cls(cpu=str(emu.get("cpu", "cortex-m4")), fpu=emu.get("fpu", "fpv4-sp-d16"),
                   float_abi=str(emu.get("float_abi", "hard")))


@dataclass(frozen=True)
class FirmwareConfig:
    """One firmware: its board identity, buffers, ops, and whether a model is built in."""

    board_id: str
    config_header: str                  # ek_board_config.h
    ops: tuple[str, ...]                # op names its resolver registers (sorted)
    arena_bytes: int                    # tensor arena (upload firmware; built-in: from export_c)
    builtin_model: bytes | None = None  # compiled into flash and activated at boot

    def digest(self) -> str:
        h = hashlib.sha256()
        h.update(self.config_header.encode())
        h.update(",".join(self.ops).encode())
        h.update(str(self.arena_bytes).encode())
        h.update(hashlib.sha256(self.builtin_model or b"").digest())
        return h.hexdigest()[:16]


@dataclass
class FirmwareBuild:
    elf: Path
    board_id: str
    tree: dict[str, Any]
    kernels: str
    target: dict[str, Any]
    ops: list[str]
    arena_bytes: int
    builtin_model_bytes: int
    sizes: dict[str, int]               # text, data, bss of the linked ELF
    library_sources: list[str] = field(default_factory=list)   # tree files linked in (relative)
    compiled: int = 0                   # objects compiled by this build (0: all cached)
    compiled_from_tree: int = 0         # of those, sources of the TFLM tree (0: its objects were cached)
    seconds: float = 0.0
    cached: bool = False

    @property
    def flash_used_bytes(self) -> int:
        return self.sizes.get("text", 0) + self.sizes.get("data", 0)

    @property
    def ram_used_bytes(self) -> int:
        return self.sizes.get("data", 0) + self.sizes.get("bss", 0)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["elf"] = str(self.elf)
        d["library_source_count"] = len(self.library_sources)
        d["flash_used_bytes"] = self.flash_used_bytes
        d["ram_used_bytes"] = self.ram_used_bytes
        d.pop("library_sources")
        return d


# -- where things are ------------------------------------------------------------------------------

def _templates() -> Path:
    from edgekit.resources import templates_dir

    return templates_dir()


def _cache_root() -> Path:
    from edgekit.resources import cache_dir

    return cache_dir()


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """One build at a time per object folder (two test sessions, two terminals)."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:          # pragma: no cover - not on Linux/macOS
        yield
        return
    with open(folder / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# -- the tree's candidate sources -------------------------------------------------------------------

def candidate_sources(tree) -> dict[str, Path]:
    """relative path -> file, for every tree source a firmware may need.

    Portable TFLM code, the reference kernels, and — where the tree has them — the CMSIS-NN kernels
    in place of the reference kernels of the same name, plus the CMSIS-NN library (no f16 sources).
    Tests, tools, examples and ports to other platforms are left out.
    """
    src: Path = tree.src
    out: dict[str, Path] = {}
    for path in sorted((src / "tensorflow").rglob("*")):
        if path.suffix not in (".cc", ".cpp", ".c") or not path.is_file():
            continue
        rel = path.relative_to(src)
        parts = rel.parts
        if _SKIP_PARTS & set(parts) or _SKIP_NAME.search(path.stem):
            continue
        if parts[:3] == ("tensorflow", "lite", "micro") and len(parts) > 4:
            sub = parts[3]
            if sub not in _MICRO_SUBDIRS:
                continue
            if sub == "kernels" and len(parts) > 5:
                if parts[4] != "cmsis_nn" or not tree.cmsis_nn or len(parts) > 6:
                    continue
        out[rel.as_posix()] = path
    if tree.cmsis_nn:
        for rel_name in [r for r in out if "/kernels/cmsis_nn/" in r]:
            reference = rel_name.replace("/kernels/cmsis_nn/", "/kernels/")
            out.pop(reference, None)
        source_dir = src / "third_party" / "cmsis_nn" / "Source"
        for path in sorted(source_dir.rglob("*.c")):
            if not _SKIP_NAME.search(path.stem):
                out[path.relative_to(src).as_posix()] = path
    return out


def include_dirs(tree) -> list[Path]:
    src: Path = tree.src
    cands = [src, src / "third_party/flatbuffers/include", src / "third_party/gemmlowp", src / "third_party/ruy",
             src / "third_party/kissfft"]
    if tree.cmsis_nn:
        cands += [src / "third_party/cmsis_nn", src / "third_party/cmsis_nn/Include",
                  src / "third_party/cmsis/CMSIS/Core/Include"]
    return [p for p in cands if p.is_dir()]


class _Index:
    """Finds the candidate sources that define a symbol the linker could not resolve."""

    def __init__(self, pool: dict[str, Path]):
        self.pool = pool
        self._texts: dict[str, str] = {}

    def text(self, rel: str) -> str:
        if rel not in self._texts:
            try:
                self._texts[rel] = self.pool[rel].read_text(encoding="utf-8", errors="replace")
            except OSError:
                self._texts[rel] = ""
        return self._texts[rel]

    @staticmethod
    def _pattern(symbol: str) -> re.Pattern | None:
        kind = "function"
        for prefix in ("vtable for ", "typeinfo for ", "typeinfo name for "):
            if symbol.startswith(prefix):
                symbol, kind = symbol[len(prefix):], "class"
        name = symbol.split("(")[0]
        while "<" in name:                      # drop template arguments
            stripped = re.sub(r"<[^<>]*>", "", name)
            if stripped == name:
                break
            name = stripped
        name = name.split("::")[-1].strip()
        if not re.fullmatch(r"[A-Za-z_]\w*", name):
            return None
        if kind == "class":
            return re.compile(rf"(?m)^(?![ \t#/*])[^\n;]*\b{name}::")
        # a definition starts at the beginning of a line (the style of TFLM and CMSIS-NN) and the line
        # does not end with ';' (that is a declaration or a call)
        return re.compile(rf"(?m)^(?![ \t#/*])[^\n]*\b{name}\s*\((?![^\n]*;[ \t]*$)")

    def definers(self, symbol: str, exclude: set[str]) -> list[str]:
        pattern = self._pattern(symbol)
        if pattern is None:
            return []
        hits = [rel for rel in self.pool if rel not in exclude and pattern.search(self.text(rel))]
        # one definition only: prefer the optimized kernel, then the shortest path
        hits.sort(key=lambda r: ("/cmsis_nn/" not in r, len(r), r))
        return hits[:1]


# -- compiling ---------------------------------------------------------------------------------------

def _deps_of(dep_file: Path) -> list[Path] | None:
    try:
        text = dep_file.read_text(errors="replace")
    except OSError:
        return None
    first = text.replace("\\\n", " ").split("\n")[0]     # the rule; -MP's phony targets follow
    _, _, prereqs = first.partition(": ")
    parts = re.split(r"(?<!\\)\s+", prereqs.strip())
    return [Path(p.replace("\\ ", " ")) for p in parts if p]


def _up_to_date(obj: Path, dep: Path) -> bool:
    if not obj.is_file():
        return False
    deps = _deps_of(dep)
    if deps is None:
        return False
    built = obj.stat().st_mtime
    try:
        return all(d.stat().st_mtime <= built for d in deps)
    except OSError:
        return False


@dataclass
class _Job:
    source: Path
    obj: Path
    flags: list[str]
    compiler: str

    def argv(self) -> list[str]:
        tmp = self.obj.with_name(self.obj.name + ".tmp")
        return [self.compiler, *self.flags, "-MMD", "-MP", "-MF", str(self.obj.with_suffix(".d")),
                "-MT", str(self.obj), "-c", str(self.source), "-o", str(tmp)]


class _Compiler:
    def __init__(self, tool: ToolFn, log: LogFn | None, dry_run: bool, jobs: int,
                 progress: ProgressFn | None):
        self.tool, self.log, self.dry_run, self.jobs, self.progress = tool, log, dry_run, jobs, progress
        self.compiled = 0

    def run(self, jobs: list[_Job]) -> None:
        todo = [j for j in jobs if self.dry_run or not _up_to_date(j.obj, j.obj.with_suffix(".d"))]
        if not todo:
            return
        if not self.dry_run:
            for j in todo:
                j.obj.parent.mkdir(parents=True, exist_ok=True)
        done = 0

        def one(job: _Job) -> None:
            self.tool(job.argv(), dry_run=self.dry_run, timeout=COMPILE_TIMEOUT_S, log=self.log)
            if not self.dry_run:
                os.replace(job.obj.with_name(job.obj.name + ".tmp"), job.obj)

        with ThreadPoolExecutor(max_workers=max(1, self.jobs)) as pool:
            for _ in pool.map(one, todo):
                done += 1
                if self.progress:
                    self.progress("compile", done, len(todo))
        self.compiled += len(todo)


def _compiler_version(tool: ToolFn, gcc: str) -> str:
    try:
        return tool([gcc, "-dumpversion"], timeout=30.0).output.strip()
    except ToolFailed:
        return "unknown"


# -- generated sources --------------------------------------------------------------------------------

def _write_generated(gen: Path, config: FirmwareConfig) -> int:
    """model_data.h/.cc, model_ops.h and ek_board_config.h into ``gen``. Returns the arena size."""
    from edgekit.exporters.c_arrays import export_c, write_op_resolver
    from edgekit.fileio import ensure_dir, write_text
    from edgekit.model.tflm_ops import resolver_method

    ensure_dir(gen)
    write_text(gen / "ek_board_config.h", config.config_header)
    if config.builtin_model is not None:
        result = export_c(config.builtin_model, gen, name="model")
        return result.arena_size_constant
    banner = ["// The op set of the edgekit upload firmware (models are sent at run time).",
              "// Generated by edgekit. Do not edit."]
    write_op_resolver(gen / "model_ops.h", "g_model", "EDGEKIT_UPLOAD_MODEL_OPS_H_", banner,
                      [(op, resolver_method(op)) for op in config.ops])
    write_text(gen / "model_data.h", "\n".join([
        "// No model is built into the upload firmware: the host sends one (protocol UPLOAD).",
        "#ifndef EDGEKIT_UPLOAD_MODEL_DATA_H_", "#define EDGEKIT_UPLOAD_MODEL_DATA_H_", "",
        "extern const unsigned char g_model_model_data[];",
        "constexpr unsigned int g_model_model_data_len = 0;",
        f"constexpr unsigned int g_model_tensor_arena_size = {int(config.arena_bytes)};", "",
        "#endif  // EDGEKIT_UPLOAD_MODEL_DATA_H_", ""]))
    write_text(gen / "model_data.cc", '#include "model_data.h"\n\n'
               "alignas(16) const unsigned char g_model_model_data[16] = {0};\n")
    return config.arena_bytes


def _templates_digest(folders: list[Path]) -> str:
    h = hashlib.sha256()
    for folder in folders:
        for path in sorted(folder.iterdir()):
            if path.is_file() and path.suffix in (".c", ".cc", ".cpp", ".h", ".ld"):
                h.update(path.name.encode())
                h.update(path.read_bytes())
    return h.hexdigest()[:16]


def _sizes(tool: ToolFn, elf: Path, log: LogFn | None) -> dict[str, int]:
    out = tool([f"{CROSS}size", str(elf)], timeout=60.0, log=log).output
    lines = [ln.split() for ln in out.strip().splitlines() if ln.strip()]
    if len(lines) >= 2 and len(lines[1]) >= 3 and lines[1][0].isdigit():
        text, data, bss = (int(v) for v in lines[1][:3])
        return {"text": text, "data": data, "bss": bss}
    return {}


# -- the build --------------------------------------------------------------------------------------

def check_ops(tree, ops) -> None:
    """Refuse, before compiling anything, ops the tree's resolver cannot add."""
    from edgekit.model.tflm_ops import resolver_method

    missing = [op for op in ops if resolver_method(op) is None or resolver_method(op) not in tree.resolver_methods]
    if missing:
        raise UnsupportedModelError(f"the TFLM tree {tree.label} has no kernel for {', '.join(missing)}",
                                    hint="replace those layers, or pass --tflm-src with a tree that has them"
                                         + (" (DECODE: a tflite-micro checkout)" if "TFLM_DECODE" in missing else ""),
                                    ops=missing, tree=str(tree.root))


def build_tflm_firmware(tree, config: FirmwareConfig, *, target: CpuTarget = CpuTarget(),
                        tool: ToolFn = seam.run_tool, log: LogFn | None = None, dry_run: bool = False,
                        jobs: int | None = None, progress: ProgressFn | None = None) -> FirmwareBuild:
    """Build (or reuse) the TFLM firmware for ``config`` from ``tree``; returns the ELF and its facts."""
    started = time.monotonic()
    check_ops(tree, config.ops)
    gcc, gxx, ar = f"{CROSS}gcc", f"{CROSS}g++", f"{CROSS}ar"
    if not dry_run:
        for t in (gcc, gxx, ar):
            seam.require(t)
    templates = _templates()
    qemu_dir, core_dir = templates / "qemu-m4", templates / "core"
    runner_dir = templates / "arduino" / "edgekit_runner"
    version = _compiler_version(tool, gcc) if not dry_run else "dry-run"

    defines = ["-DTF_LITE_STATIC_MEMORY", *(f"-D{d}" for d in tree.defines)]
    if tree.cmsis_nn:
        defines.append("-DCMSIS_NN")
    incs = [f"-I{p}" for p in include_dirs(tree)]
    common = [*target.flags, "-Os", "-ffunction-sections", "-fdata-sections", "-fmessage-length=0"]
    cxx_flags = [*common, "-std=c++17", "-fno-exceptions", "-fno-rtti", "-fno-threadsafe-statics",
                 "-fno-unwind-tables", "-fno-asynchronous-unwind-tables", *defines, *incs]
    c_lib_flags = [*common, "-std=c11", *defines, *incs]

    lib_key = hashlib.sha256(json.dumps([FORMAT_VERSION, str(tree.src), tree.layout, tree.name, tree.version,
                                         version, cxx_flags, c_lib_flags]).encode()).hexdigest()[:16]
    lib_dir = _cache_root() / "tflm" / f"{tree.name}-{lib_key}"
    fw_key = hashlib.sha256(json.dumps([lib_key, config.digest(),
                                        _templates_digest([qemu_dir, core_dir, runner_dir])]).encode()).hexdigest()[:16]
    fw_dir = _cache_root() / "firmware" / f"tflm-{config.board_id}-{fw_key}"
    elf = fw_dir / ELF_NAME
    facts_file = fw_dir / "build.json"
    if not dry_run and elf.is_file() and facts_file.is_file():
        try:
            facts = json.loads(facts_file.read_text())
            return FirmwareBuild(**{**facts, "elf": elf, "cached": True, "compiled": 0, "compiled_from_tree": 0,
                                    "seconds": time.monotonic() - started})
        except (ValueError, TypeError):
            pass

    gen = fw_dir / "gen"
    arena = _write_generated(gen, config) if not dry_run else config.arena_bytes
    fw_c_flags = [*common, "-std=c99", "-Wall", "-Wextra", "-Werror", "-DEK_QEMU_TFLM",
                  *(["-DEK_QEMU_BUILTIN_MODEL"] if config.builtin_model is not None else []),
                  "-include", str(gen / "ek_board_config.h"), f"-I{gen}", f"-I{qemu_dir}", f"-I{core_dir}",
                  f"-I{runner_dir}"]
    fw_cxx_flags = [*cxx_flags, *(["-DEK_TFLM_DEBUG_LOG_VA"] if tree.debug_log == "va_list" else []),
                    "-include", str(gen / "ek_board_config.h"), f"-I{gen}", f"-I{qemu_dir}", f"-I{core_dir}",
                    f"-I{runner_dir}"]
    fw_sources = [(qemu_dir / n, gcc, fw_c_flags) for n in ("startup.c", "board.c", "main.c")]
    fw_sources += [(core_dir / n, gcc, fw_c_flags) for n in ("ek_cobs.c", "ek_crc32.c", "ek_sha256.c", "ek_proto.c")]
    fw_sources += [(runner_dir / "ek_tflm_runner.cpp", gxx, fw_cxx_flags),
                   (qemu_dir / "ek_tflm_support.cc", gxx, fw_cxx_flags), (gen / "model_data.cc", gxx, fw_cxx_flags)]
    fw_jobs = [_Job(src, fw_dir / "obj" / (src.name + ".o"), flags, cc) for src, cc, flags in fw_sources]

    pool = candidate_sources(tree)
    index = _Index(pool)
    compiler = _Compiler(tool, log, dry_run, jobs or os.cpu_count() or 2, progress)

    def lib_job(rel: str) -> _Job:
        src = pool[rel]
        cc, flags = (gcc, c_lib_flags) if src.suffix == ".c" else (gxx, cxx_flags)
        return _Job(src, lib_dir / "obj" / (rel + ".o"), flags, cc)

    closure_file = lib_dir / "closures" / (hashlib.sha256(",".join(config.ops).encode()).hexdigest()[:16] + ".json")
    with (nullcontext() if dry_run else _locked(lib_dir)):
        selected: list[str] = []
        if closure_file.is_file():
            try:
                selected = [r for r in json.loads(closure_file.read_text()) if r in pool]
            except ValueError:
                selected = []
        if log:
            log(f"# TFLM firmware for {config.board_id} from {tree.label} ({tree.kernels} kernels): "
                f"{len(selected) or 'resolving'} tree sources, objects cached in {lib_dir}")
        compiler.run(fw_jobs)
        own_compiled = compiler.compiled
        link_map = fw_dir / "firmware.map"
        archive = fw_dir / "libtflm.a"
        ld_script = qemu_dir / "mps2_an386.ld"
        for round_no in range(MAX_LINK_ROUNDS):
            lib_jobs = [lib_job(r) for r in selected]
            compiler.run(lib_jobs)
            if not dry_run and archive.exists():
                archive.unlink()
            if lib_jobs:
                tool([ar, "rcsT", str(archive), *(str(j.obj) for j in lib_jobs)], dry_run=dry_run,
                     timeout=LINK_TIMEOUT_S, log=log)
            link = [gxx, *target.flags, "-T", str(ld_script), "-nostartfiles", "--specs=nano.specs",
                    "--specs=nosys.specs", "-Wl,--gc-sections", f"-Wl,-Map={link_map}",
                    *(str(j.obj) for j in fw_jobs), "-Wl,--start-group",
                    *([str(archive)] if lib_jobs else []), "-lm", "-lc", "-lgcc", "-Wl,--end-group",
                    "-o", str(elf)]
            try:
                tool(link, dry_run=dry_run, timeout=LINK_TIMEOUT_S, log=log)
                break
            except ToolFailed as e:
                output = str(e.context.get("output") or e.context.get("output_tail") or "")
                undefined = sorted(set(_UNDEFINED.findall(output)))
                if not undefined:
                    raise
                added: set[str] = set()
                unresolved = []
                for symbol in undefined:
                    found = index.definers(symbol, set(selected) | added)
                    if found:
                        added.update(found)
                    else:
                        unresolved.append(symbol)
                if not added:
                    missing = unresolved or undefined
                    raise ToolFailed(f"cannot link the firmware: {tree.label} defines no "
                                     + (f"{missing[0]}" if len(missing) == 1 else
                                        f"{len(missing)} undefined symbols: {', '.join(missing)}"),
                                     hint="the tree may be incomplete (third-party downloads) or too old for "
                                          "this runner", tool=gxx, undefined=undefined) from e
                selected = sorted(set(selected) | added)
                if log:
                    log(f"# link round {round_no + 1}: {len(added)} more tree sources "
                        f"({', '.join(sorted(added)[:4])}{', ...' if len(added) > 4 else ''})")
        else:
            raise ToolFailed(f"cannot link the firmware after {MAX_LINK_ROUNDS} rounds of adding sources",
                             hint="report this with the tree's layout and version", tool=gxx)
        if not dry_run:
            closure_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = closure_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(selected, indent=0))
            os.replace(tmp, closure_file)
    sizes = _sizes(tool, elf, log) if not dry_run else {}
    build = FirmwareBuild(elf=elf, board_id=config.board_id, tree=tree.to_dict(), kernels=tree.kernels,
                          target=asdict(target), ops=list(config.ops), arena_bytes=int(arena),
                          builtin_model_bytes=len(config.builtin_model or b""), sizes=sizes,
                          library_sources=selected, compiled=compiler.compiled,
                          compiled_from_tree=compiler.compiled - own_compiled,
                          seconds=time.monotonic() - started, cached=False)
    if not dry_run:
        facts = build.to_dict()
        for k in ("elf", "cached", "compiled", "compiled_from_tree", "seconds", "library_source_count",
                  "flash_used_bytes", "ram_used_bytes"):
            facts.pop(k, None)
        facts["library_sources"] = selected
        tmp = facts_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(facts, indent=1))
        os.replace(tmp, facts_file)
    return build
