"""The DICOM context's series rules, pure: instances to series, ordered and checked.

`admit` sorts out instances that contradict what is known of their series, `assemble`
groups instances into series and `merge` joins instances of a later upload to the series
already known; `without` takes out those whose objects left a synced bucket; `order`
puts a series' instances along its slice direction. One file's
headers become an `Instance` (or a `Rejected`) in `services.dicom.reader`. No I/O here; no
clock, no ids.
"""

from __future__ import annotations

import bisect
import functools
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, TypeVar

#: Without any of these a file is refused with `missing_tags`.
REQUIRED_TAGS: Final = (
    "Rows",
    "Columns",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "PatientID",
)
#: Every instance of a series needs these for the series to be `renderable_3d` (sorted).
TAGS_3D: Final = (
    "ImageOrientationPatient",
    "ImagePositionPatient",
    "PixelSpacing",
    "SliceThickness",
)
OPTIONAL_TAGS: Final = ("Modality", "InstanceNumber", *TAGS_3D)
#: Named in `missing_tags` when the file has no pixel data element at all.
PIXEL_DATA = "PixelData"

MAX_POSITION_MM = 1e7  # 10 km from the patient's origin: anything beyond is garbage
MAX_LENGTH_MM = 1e6  # a slice thickness or pixel spacing
UNIT_TOLERANCE = 1e-2  # direction cosines: unit length and orthogonal, within this


# --- Results --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Instance:
    """The facts of one DICOM instance this context keeps. Optional facts are None if absent.

    `orientation` is ImageOrientationPatient (row direction, then column direction),
    `position` ImagePositionPatient (mm), `pixel_spacing` PixelSpacing (row spacing, column
    spacing, mm).
    """

    sop_uid: str
    series_uid: str
    study_uid: str
    patient_id: str
    rows: int
    columns: int
    modality: str | None = None
    position: tuple[float, float, float] | None = None
    orientation: tuple[float, float, float, float, float, float] | None = None
    slice_thickness: float | None = None
    pixel_spacing: tuple[float, float] | None = None
    instance_number: int | None = None
    # What a viewer's study list shows and searches by, by DICOM keyword (PatientName,
    # StudyDate, SeriesDescription, ...: tags.LISTED), as text; none of it decides
    # anything here. Absent in instances read before it was kept.
    listed: dict[str, str] = field(default_factory=dict, hash=False, compare=False)

    @property
    def missing_3d_tags(self) -> tuple[str, ...]:
        if (
            self.orientation is not None
            and self.position is not None
            and self.pixel_spacing is not None
            and self.slice_thickness is not None
        ):
            return ()  # the common case, asked of every member each time a series grows
        present = {
            "ImageOrientationPatient": self.orientation is not None,
            "ImagePositionPatient": self.position is not None,
            "PixelSpacing": self.pixel_spacing is not None,
            "SliceThickness": self.slice_thickness is not None,
        }
        return tuple(keyword for keyword in TAGS_3D if not present[keyword])


@dataclass(frozen=True, slots=True)
class Rejected:
    """Why a file (or an instance) is not accepted: a snake_case code, a message for a person.

    Codes: `not_dicom`, `unsupported_transfer_syntax`, `malformed_dicom`, `missing_tags`
    (`details.missing_tags`), `truncated`, `invalid_tags` (`details.invalid_tags`: keyword ->
    what is wrong), `header_too_large`, `read_too_slow` (the reader's per-file caps), and
    from `admit`: `series_conflict`, `duplicate_instance`.
    """

    code: str
    message: str
    details: Mapping[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True, slots=True)
class Refusal:
    """An instance `admit` left out, and why."""

    instance: Instance
    rejected: Rejected


@dataclass(frozen=True, slots=True)
class Admission:
    accepted: tuple[Instance, ...]
    refused: tuple[Refusal, ...]


@dataclass(frozen=True, slots=True)
class Series:
    """One series: its instances (one per SOPInstanceUID) ordered along the slice direction.

    `renderable_3d` says every instance has ImagePositionPatient, ImageOrientationPatient,
    SliceThickness and PixelSpacing; `missing_3d_tags` names (sorted) each of them that some
    instance lacks.
    """

    series_uid: str
    study_uid: str
    patient_id: str
    modality: str | None
    instances: tuple[Instance, ...]
    renderable_3d: bool
    missing_3d_tags: tuple[str, ...]

    @property
    def instance_count(self) -> int:
        return len(self.instances)

    @property
    def sop_uids(self) -> tuple[str, ...]:
        return tuple(instance.sop_uid for instance in self.instances)

    def facts(self) -> dict[str, Any]:
        """The File's `dicom` object of API.md."""
        return {
            "study_uid": self.study_uid,
            "series_uid": self.series_uid,
            "patient_id": self.patient_id,
            "modality": self.modality,
            "instances": self.instance_count,
            "renderable_3d": self.renderable_3d,
            "missing_3d_tags": list(self.missing_3d_tags),
        }


# --- Series ----------------------------------------------------------------------------------


def admit(instances: Iterable[Instance], known: Iterable[Series] = ()) -> Admission:
    """Leaves out the instances that contradict their series, in the order given.

    The first word on a series wins: the known series, else its first instance here. An
    instance naming another study or patient than its series is `series_conflict` (one
    series never mixes patients). A SOPInstanceUID already seen in another series is
    `duplicate_instance`. The same SOPInstanceUID again in the same series is accepted:
    `assemble` and `merge` keep it once.
    """
    owners: dict[str, tuple[str, str]] = {}
    sop_series: dict[str, str] = {}
    for series in known:
        owners[series.series_uid] = (series.study_uid, series.patient_id)
        for sop_uid in series.sop_uids:
            sop_series.setdefault(sop_uid, series.series_uid)
    accepted: list[Instance] = []
    refused: list[Refusal] = []
    for instance in instances:
        study_uid, patient_id = owners.setdefault(
            instance.series_uid, (instance.study_uid, instance.patient_id)
        )
        seen_in = sop_series.get(instance.sop_uid, instance.series_uid)
        if seen_in != instance.series_uid:
            refused.append(
                Refusal(
                    instance,
                    Rejected(
                        "duplicate_instance",
                        f"SOPInstanceUID {instance.sop_uid} is already in series {seen_in};"
                        f" this file puts it in series {instance.series_uid}",
                        {"sop_uid": instance.sop_uid, "series_uid": seen_in},
                    ),
                )
            )
            continue
        clash = [
            (name, have, got)
            for name, have, got in (
                ("StudyInstanceUID", study_uid, instance.study_uid),
                ("PatientID", patient_id, instance.patient_id),
            )
            if have != got
        ]
        if clash:
            refused.append(
                Refusal(
                    instance,
                    Rejected(
                        "series_conflict",
                        f"series {instance.series_uid} belongs to "
                        + " and ".join(f"{name} {have}" for name, have, _ in clash)
                        + "; this file says "
                        + " and ".join(f"{name} {got}" for name, _, got in clash),
                        {
                            "series_uid": instance.series_uid,
                            "conflicting_tags": {
                                name: {"series": have, "file": got} for name, have, got in clash
                            },
                        },
                    ),
                )
            )
            continue
        sop_series[instance.sop_uid] = instance.series_uid
        accepted.append(instance)
    return Admission(tuple(accepted), tuple(refused))


def assemble(instances: Iterable[Instance]) -> list[Series]:
    """Groups instances by SeriesInstanceUID, in the order each series first appears.

    The same SOPInstanceUID twice is one instance (the first given). The series takes its
    study, patient and modality from its first instance (modality: the first that has one);
    run `admit` first to leave out instances that contradict it.
    """
    return merge((), instances)


def merge(known: Iterable[Series], instances: Iterable[Instance]) -> list[Series]:
    """The series the instances belong to, with them joined: a later upload joining series.

    Known series keep their study, patient and modality (a missing modality is taken from
    the new instances) and their instances; an instance whose SOPInstanceUID the series
    already has is ignored. Series none of the instances belong to are not returned; one
    whose new instances were all duplicates comes back equal to the known one. New series
    come after the known ones, in the order they first appear. `merge(known, instances)`
    holds the same series as `assemble(<the known series' instances> + instances)`.
    """
    known_by_uid = {series.series_uid: series for series in known}
    groups: dict[str, list[Instance]] = {}
    for instance in instances:
        groups.setdefault(instance.series_uid, []).append(instance)
    touched = [uid for uid in known_by_uid if uid in groups]
    touched += [uid for uid in groups if uid not in known_by_uid]
    out = []
    for uid in touched:
        base = known_by_uid.get(uid)
        if base is not None and base.instances:
            out.append(_joined(base, groups[uid]))
        else:
            out.append(_series(uid, [*(base.instances if base else ()), *groups[uid]], base))
    return out


def _joined(base: Series, instances: Sequence[Instance]) -> Series:
    """`_series` of the base's instances and these, without sorting the base again: its
    instances are in `order`'s order already, so while the slice direction stays (the
    common extension) the new ones are put in place by bisection, O(k log n) keys where
    the whole series' keys were made and sorted each batch. A direction that turns (a
    new lowest UID of another orientation) or a new slice without a position or an
    orientation (then by InstanceNumber) orders the whole series again."""
    had = {i.sop_uid for i in base.instances}
    fresh: dict[str, Instance] = {}
    for instance in instances:
        if instance.sop_uid not in had:
            fresh.setdefault(instance.sop_uid, instance)
    added = list(fresh.values())
    modality = base.modality
    if modality is None:
        modality = next(
            (i.modality for i in (*base.instances, *added) if i.modality is not None), None
        )
    missing = sorted(set(base.missing_3d_tags).union(*(i.missing_3d_tags for i in added)))
    return Series(
        series_uid=base.series_uid,
        study_uid=base.study_uid,
        patient_id=base.patient_id,
        modality=modality,
        instances=_inserted(base, added) if added else base.instances,
        renderable_3d=not missing,
        missing_3d_tags=tuple(missing),
    )


_PLACING = frozenset({"ImagePositionPatient", "ImageOrientationPatient"})


def _inserted(base: Series, added: list[Instance]) -> tuple[Instance, ...]:
    """The base's instances (ordered) with `added` (new UIDs) in `order`'s order."""
    # The base's missing tags say whether each of its slices is placed (`slice_normal`).
    base_placed = not _PLACING.intersection(base.missing_3d_tags)
    added_placed = all(i.position is not None and i.orientation is not None for i in added)
    key: Callable[[Instance], Any]
    if not base_placed:
        key = _by_number  # so is the whole series, whatever the new slices carry
    elif not added_placed:
        return order([*base.instances, *added])  # from by position to by number
    else:
        lowest = min(base.instances, key=_uid_key)
        new_lowest = min(added, key=_uid_key)
        normal = slice_normal([lowest])
        if _uid_key(new_lowest) < _uid_key(lowest) and slice_normal([new_lowest]) != normal:
            return order([*base.instances, *added])  # the direction turned
        assert normal is not None

        def along(instance: Instance) -> tuple[float, tuple[int, int], bytes]:
            assert instance.position is not None and normal is not None
            return _dot(instance.position, normal), _number_key(instance), _uid_key(instance)

        key = along
    out = list(base.instances)
    # Ties (UIDs whose parts are equal as numbers: "1.01" and "1.1") after the base's,
    # in the order given: as the stable sort of the base's then the new ones does.
    for instance in sorted(added, key=key):
        bisect.insort_right(out, instance, key=key)
    return tuple(out)


def _by_number(instance: Placed) -> tuple[tuple[int, int], bytes]:
    return _number_key(instance), _uid_key(instance)


def _series(uid: str, instances: Sequence[Instance], base: Series | None) -> Series:
    unique: dict[str, Instance] = {}
    for instance in instances:
        unique.setdefault(instance.sop_uid, instance)
    members = list(unique.values())
    first = members[0]
    modality = base.modality if base else None
    if modality is None:
        modality = next((i.modality for i in members if i.modality is not None), None)
    missing = sorted({keyword for i in members for keyword in i.missing_3d_tags})
    return Series(
        series_uid=uid,
        study_uid=base.study_uid if base else first.study_uid,
        patient_id=base.patient_id if base else first.patient_id,
        modality=modality,
        instances=order(members),
        renderable_3d=not missing,
        missing_3d_tags=tuple(missing),
    )


def without(series: Series, sop_uids: Iterable[str]) -> Series:
    """The series less these instances (their objects gone from a synced bucket); UIDs
    it does not have are passed over. Its study, patient and modality stay (the first
    word on a series still wins: an instance that comes back joins it as before); its 3D
    facts and order are those of the instances left. It may have none left: then it is
    not renderable in 3D and misses no tag."""
    gone = set(sop_uids)
    left = [instance for instance in series.instances if instance.sop_uid not in gone]
    if len(left) == len(series.instances):
        return series
    missing = sorted({keyword for i in left for keyword in i.missing_3d_tags})
    return Series(
        series_uid=series.series_uid,
        study_uid=series.study_uid,
        patient_id=series.patient_id,
        modality=series.modality,
        instances=order(left),
        renderable_3d=bool(left) and not missing,
        missing_3d_tags=tuple(missing),
    )


def emptied(series_uid: str, study_uid: str, patient_id: str, modality: str | None) -> Series:
    """A series every instance of which left (`without`): what a later instance of it
    joins, as the series it was."""
    return Series(series_uid, study_uid, patient_id, modality, (), False, ())


class Placed(Protocol):
    """What `order` reads of an instance."""

    @property
    def sop_uid(self) -> str: ...
    @property
    def position(self) -> tuple[float, float, float] | None: ...
    @property
    def orientation(self) -> tuple[float, float, float, float, float, float] | None: ...
    @property
    def instance_number(self) -> int | None: ...


P = TypeVar("P", bound=Placed)


def order(instances: Iterable[P]) -> tuple[P, ...]:
    """Instances along the slice direction, whatever order they come in.

    When every instance has ImagePositionPatient and ImageOrientationPatient: by the
    position's distance along the normal (row direction x column direction) of the
    orientation of the instance with the lowest SOPInstanceUID (ascending: for an axial
    series, from the feet to the head); ties by InstanceNumber, then SOPInstanceUID.
    Otherwise by InstanceNumber (instances without one last), then SOPInstanceUID. UIDs
    compare component by component, as numbers.
    """
    members = list(instances)
    if not members:
        return ()
    normal = slice_normal(members)
    if normal is not None:

        def along(instance: P) -> tuple[float, tuple[int, int], bytes]:
            assert instance.position is not None
            return _dot(instance.position, normal), _number_key(instance), _uid_key(instance)

        return tuple(sorted(members, key=along))
    return tuple(sorted(members, key=_by_number))


def slice_normal(instances: Sequence[Placed]) -> tuple[float, float, float] | None:
    """The direction `order` sorts these instances along (None: by InstanceNumber)."""
    if not instances or not all(
        i.position is not None and i.orientation is not None for i in instances
    ):
        return None
    reference = min(instances, key=_uid_key).orientation
    assert reference is not None
    return _cross(reference[:3], reference[3:])


def uid_order(uid: str) -> bytes:
    """What `order` compares SOPInstanceUIDs by (component by component, as numbers)."""
    return _uid_bytes(uid)


def normal_of(orientation: Sequence[float]) -> tuple[float, float, float]:
    """The slice direction an ImageOrientationPatient gives (`slice_normal`'s)."""
    return _cross(orientation[:3], orientation[3:])


def slice_key(instance: Placed, normal: tuple[float, float, float] | None) -> bytes:
    """Bytes that sort (compared byte by byte, as PostgreSQL compares bytea) as `order`
    sorts the instance among a series whose `slice_normal` is `normal`. A key depends on
    its own instance and the series' normal only: a series extended keeps its keys while
    its normal stays (most extensions), where ranks 0..n-1 moved every slice after the
    first new one."""
    along = b""
    if normal is not None:
        assert instance.position is not None
        # IEEE 754 bits in sort order: negatives all inverted, positives' sign bit set.
        bits = struct.unpack(">Q", struct.pack(">d", _dot(instance.position, normal) + 0.0))[0]
        along = (bits ^ (0xFFFFFFFFFFFFFFFF if bits >> 63 else 1 << 63)).to_bytes(8, "big")
    absent, n = _number_key(instance)
    number = bytes([absent]) + (n + (1 << 63)).to_bytes(8, "big")
    return along + number + _uid_bytes(instance.sop_uid)


@functools.lru_cache(maxsize=1 << 16)
def _uid_bytes(uid: str) -> bytes:
    """The UID's parts in bytes that sort as `order` compares UIDs: a number by its
    length then its digits' value, a text part after any number, ended by a zero byte; a
    UID that is another's prefix sorts first. (read_instance only makes UIDs of digits
    and dots; others, built by hand, sort as text.) Bytes, not a tuple of the parts: two
    UIDs of one series share most of their parts, which a tuple's comparison walks in
    Python (`slice_normal`'s `min`), where bytes compare in one `memcmp`. Cached: a
    series is ordered again each time an upload joins it, and splitting every UID each
    time was a quarter of the DICOM context's CPU on a 3,000-instance series."""
    out = []
    for part in uid.split("."):
        if part.isascii() and part.isdigit():
            value = int(part)
            size = (value.bit_length() + 7) // 8
            out.append(b"\x01" + size.to_bytes(1, "big") + value.to_bytes(size, "big"))
        else:
            out.append(b"\x02" + part.encode() + b"\x00")
    return b"".join(out)


def _number_key(instance: Placed) -> tuple[int, int]:
    n = instance.instance_number
    return (0, n) if n is not None else (1, 0)


def _uid_key(instance: Placed) -> bytes:
    return _uid_bytes(instance.sop_uid)


def _dot(a: Sequence[float], b: Sequence[float]) -> float:
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def _cross(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    return (
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    )


# --- Geometry -------------------------------------------------------------------------------


def orthonormal(orientation: Sequence[float]) -> bool:
    """ImageOrientationPatient's row and column directions are orthogonal unit vectors."""
    row, column = orientation[:3], orientation[3:]
    return (
        abs(_dot(row, row) - 1) <= UNIT_TOLERANCE
        and abs(_dot(column, column) - 1) <= UNIT_TOLERANCE
        and abs(_dot(row, column)) <= UNIT_TOLERANCE
    )
