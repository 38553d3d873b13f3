"""ScanNet200 class list and the official head/common/tail groups."""

import csv

import numpy as np
import pytest

from tests import conftest

from dos_jax.eval import splits


def test_scannet200_has_200_unique_classes():
  assert len(splits.VALID_CLASS_IDS_200) == 200
  assert len(set(splits.VALID_CLASS_IDS_200)) == 200
  assert len(splits.CLASS_NAMES_200) == 200
  assert len(set(splits.CLASS_NAMES_200)) == 200
  # Spot checks against ScanNet's label table: wall=1, chair=2, floor=3, mattress=1191.
  ids = dict(zip(splits.CLASS_NAMES_200, splits.VALID_CLASS_IDS_200))
  assert (ids["wall"], ids["chair"], ids["floor"], ids["mattress"]) == (1, 2, 3, 1191)


def test_ids_and_names_agree_with_scannet_label_table():
  # Independent source: ScanNet's own scannetv2-labels.combined.tsv (id -> category), when the shared data has it.
  tsv = conftest.require_shared("data", "scannet_votenet50k", "scannetv2-labels.combined.tsv")
  with open(tsv, newline="") as f:
    table = {}
    for row in csv.DictReader(f, delimiter="\t"):
      table.setdefault(int(row["id"]), set()).add(row["category"])
  for cid, name in zip(splits.VALID_CLASS_IDS_200, splits.CLASS_NAMES_200):
    assert name in table.get(cid, ()), (cid, name)


def test_official_group_counts_disjoint_and_covering():
  g = splits.SCANNET200_GROUPS
  assert (len(g["head"]), len(g["common"]), len(g["tail"])) == (66, 68, 66)
  head, common, tail = set(g["head"]), set(g["common"]), set(g["tail"])
  assert not head & common and not head & tail and not common & tail
  assert head | common | tail == set(range(200))
  names = splits.CLASS_NAMES_200
  assert "wall" in {names[i] for i in head}
  assert "mattress" in {names[i] for i in common}
  assert "luggage" in {names[i] for i in tail}
  assert splits.class_groups("scannet200") == g


def test_other_class_lists():
  assert len(splits.CLASS_NAMES_20) == 20 and len(splits.NYU40_IDS_20) == 20
  assert len(splits.CLASS_NAMES_S3DIS) == 13
  assert len(splits.CLASS_NAMES_SEMANTIC_KITTI) == 19
  assert splits.class_groups("s3dis") == {}
  assert splits.class_names("scannet") == splits.CLASS_NAMES_20
  assert splits.class_names("unknown", 3) == ("class_0", "class_1", "class_2")
