"""Kubernetes resource quantities ("500m", "1.5Gi", "1e3"), as the API server reads them (apimachinery
resource.ParseQuantity), so that a bad one fails where the task is decorated, not when its pod is created; and the
quantities that either Flyte SDK's `Resources` names."""

import re
from dataclasses import fields
from fractions import Fraction
from typing import Dict, Optional, Set

_SUFFIXES = {"n": Fraction(1, 10**9), "u": Fraction(1, 10**6), "m": Fraction(1, 1000), "": 1, "k": 10**3, "M": 10**6,
             "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
             "Pi": 2**50, "Ei": 2**60}
_QUANTITY = re.compile(r"([+-]?(?:\d+\.?\d*|\.\d+))([eE][+-]?\d+|[KMGTPE]i|[numkMGTPE]?)")


def quantity(text: str) -> Fraction:
    """The quantity `text` as an exact number; ValueError if Kubernetes would refuse it."""
    match = _QUANTITY.fullmatch(str(text))
    if match is None:
        raise ValueError(f"{text!r} is not a Kubernetes quantity (such as 2, 500m, 1.5, 4Gi, 512Mi)")
    number, suffix = match.groups()
    if suffix in _SUFFIXES:
        return Fraction(number) * _SUFFIXES[suffix]
    return Fraction(number) * Fraction(10) ** int(suffix[1:])  # an exponent: 1e3


# The Kubernetes resource of each field of flytekit's Resources (cpu, mem, gpu, ephemeral_storage) and of Flyte 2's
# (cpu, memory, gpu, disk; its shm has no Kubernetes resource).
KUBERNETES_NAMES = {"cpu": "cpu", "mem": "memory", "memory": "memory", "gpu": "nvidia.com/gpu",
                    "ephemeral_storage": "ephemeral-storage", "disk": "ephemeral-storage"}


def resource_fields(resources) -> Dict[str, object]:
    """{field: value} of the fields a `Resources` of either SDK sets (None: none)."""
    if resources is None:
        return {}
    return {f.name: getattr(resources, f.name) for f in fields(resources) if getattr(resources, f.name) is not None}


def kubernetes_quantities(resources: Optional[object]) -> Dict[str, str]:
    """{Kubernetes resource name: quantity} of a `Resources` of either SDK, checked as config.py does."""
    return {KUBERNETES_NAMES[field]: str(value) for field, value in resource_fields(resources).items()}


def resource_names(resources: Optional[object]) -> Set[str]:
    """The Kubernetes resources that a `Resources` of either SDK names, whatever form its values take."""
    return {KUBERNETES_NAMES[field] for field in resource_fields(resources) if field in KUBERNETES_NAMES}
