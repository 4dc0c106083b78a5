#!/usr/bin/env python3
"""Writes src/proto/schema.txt: field numbers, JSON names and types of the Kubernetes protobuf
messages, read from upstream's generated.proto files (k8s.io/api and k8s.io/apimachinery checkouts).

Usage: gen_proto_schema.py API_CHECKOUT APIMACHINERY_CHECKOUT > src/proto/schema.txt

Output lines: `M <full.message.Name>` then one `F <number> <jsonName> <label> <type> [<valueType>]`
per field, label being o (optional), z (optional whose zero value Go's JSON omits), r (repeated) or
m (map; type is the key, valueType the value).
"""
import re
import sys

API_PKGS = ["core/v1", "apps/v1", "coordination/v1", "autoscaling/v1", "autoscaling/v2",
            "batch/v1", "policy/v1", "networking/v1", "discovery/v1", "events/v1", "rbac/v1"]
AM_FILES = ["pkg/apis/meta/v1/generated.proto", "pkg/api/resource/generated.proto",
            "pkg/util/intstr/generated.proto", "pkg/runtime/generated.proto"]

FIELD = re.compile(r"^\s*(optional|repeated|required)\s+([\w.]+)\s+(\w+)\s*=\s*(\d+)")
MAP = re.compile(r"^\s*map<\s*([\w.]+)\s*,\s*([\w.]+)\s*>\s+(\w+)\s*=\s*(\d+)")
SCALARS = {"string", "int32", "int64", "bool", "bytes", "double", "float", "uint32", "uint64"}


def qualify(t, pkg):
    t = t.lstrip(".")
    if t in SCALARS or "." in t:
        return t
    return f"{pkg}.{t}"


GOFIELD = re.compile(r'^\s+(\w+)\s+(\*?)(\S+)\s+`json:"([^"]*)"')


def omit_zero(dirpath):
    """(struct, jsonName) of non-pointer fields tagged omitempty: Go's JSON drops their zero values,
    while its protobuf always carries them."""
    import glob, os
    out = set()
    for f in glob.glob(os.path.join(dirpath, "*.go")):
        if f.endswith("_test.go") or "generated" in os.path.basename(f) or "zz_" in f:
            continue
        struct = None
        for line in open(f):
            m = re.match(r"^type (\w+) struct {", line)
            if m:
                struct = m.group(1)
                continue
            if line.startswith("}"):
                struct = None
            g = GOFIELD.match(line)
            if struct and g:
                name, ptr, typ, tag = g.groups()
                parts = tag.split(",")
                if ptr == "" and "omitempty" in parts[1:] and not typ.startswith(("[]", "map[")):
                    out.add((struct, parts[0]))
    return out


def parse(path, zero):
    text = open(path).read()
    pkg = re.search(r"^package\s+([\w.]+);", text, re.M).group(1)
    out, depth = [], 0
    for line in text.splitlines():
        s = line.split("//")[0]
        m = re.match(r"^\s*message\s+(\w+)\s*{", s)
        if m and depth == 0:
            msg = m.group(1)
            out.append(f"M {pkg}.{msg}")
        if depth == 1:
            f = FIELD.match(s)
            if f:
                label = "r" if f.group(1) == "repeated" else "o"
                if label == "o" and (msg, f.group(3)) in zero:
                    label = "z"
                out.append(f"F {f.group(4)} {f.group(3)} {label} {qualify(f.group(2), pkg)}")
            mm = MAP.match(s)
            if mm:
                out.append(f"F {mm.group(4)} {mm.group(3)} m {qualify(mm.group(1), pkg)} {qualify(mm.group(2), pkg)}")
        depth += s.count("{") - s.count("}")
    return out


def main():
    api, am = sys.argv[1], sys.argv[2]
    lines = []
    import os
    for p in API_PKGS:
        lines += parse(f"{api}/{p}/generated.proto", omit_zero(f"{api}/{p}"))
    for f in AM_FILES:
        lines += parse(f"{am}/{f}", omit_zero(os.path.dirname(f"{am}/{f}")))
    print("\n".join(lines))


main()
