"""Readers of gene-set databases and networks: GMT, TRRUST, STRING (channels recombined as STRING does)."""

import gzip

import numpy as np
import pytest

from builder.errors import AtlasError
from builder.parse import COMBINED, STRING_CHANNELS, string_channels
from builder.pipeline.annotation.genesets import bundled, read_gmt, read_string, read_trrust, string_score

# Rows of STRING's protein.links.full files (v10.5/v11, CC BY 4.0): every channel, then STRING's own
# combined_score. Homology is 0 in all of them, so STRING v12's formula (which leaves it out) applies.
FULL_HEADER = ("protein1 protein2 neighborhood neighborhood_transferred fusion cooccurence homology coexpression "
               "coexpression_transferred experiments experiments_transferred database database_transferred "
               "textmining textmining_transferred combined_score")
FULL_ROWS = """0 0 0 332 0 0 62 0 181 0 0 0 125 490
0 0 0 0 0 0 0 0 186 0 0 0 56 198
0 0 0 0 0 0 0 0 160 0 0 0 0 159
0 0 0 0 0 0 61 0 158 0 0 542 0 606
0 0 0 0 0 69 61 0 78 0 0 0 89 167
0 0 0 0 0 141 0 0 131 0 0 0 98 267
0 0 0 0 0 0 62 0 171 0 0 0 56 201
0 0 0 0 0 0 61 0 131 0 0 0 43 150
0 0 0 0 0 0 61 0 0 0 0 0 224 240
0 0 0 0 0 0 63 0 63 0 0 0 237 271
0 0 0 0 0 0 54 0 0 0 0 103 85 155
0 0 0 0 0 60 63 0 213 0 0 0 72 270""".splitlines()
# The same kind of pair in the detailed format (direct and transferred merged per channel).
DETAILED_HEADER = "protein1 protein2 neighborhood fusion cooccurence coexpression experimental database textmining combined_score"
DETAILED_ROW = "0 0 0 53 176 0 128 260"


def test_gmt_styles_weights_and_ensembl_ids(tmp_path):
    f = tmp_path / "x.gmt"
    f.write_text("SET_A\thttp://x\ttp53\tMDM2\nSet B (GO:1)\t\tCDKN1A,1.0\tENSG00000141510.17\t\n")
    gs = read_gmt(f)
    assert gs.name == "x" and gs.terms == ["SET_A", "Set B (GO:1)"]
    assert gs.genes == [["MDM2", "TP53"], ["CDKN1A", "TP53"]]


@pytest.mark.parametrize("text,line,what", [
    ("A\t\tTP53\n\nB\t\tMDM2\n", 2, "empty line"),
    ("A\t\tTP53\nB only\n", 2, "malformed GMT line"),
    ("A\t\tTP53\nB\t\t7157\t4193\n", 2, "Entrez"),
    ("A\t\t\t\n", 1, "no genes"),
])
def test_bad_gmt_names_file_and_line(tmp_path, text, line, what):
    f = tmp_path / "bad.gmt"
    f.write_text(text)
    with pytest.raises(AtlasError, match=rf"bad\.gmt:{line}: .*{what}"):
        read_gmt(f)


def test_trrust_with_and_without_header(tmp_path):
    body = "TP53\tMDM2\tActivation\t1\nTP53\tCDKN1A\tActivation\t2\nMYC\tTP53\tUnknown\t3\n"
    a, b = tmp_path / "h.tsv", tmp_path / "n.tsv"
    a.write_text("TF\tTarget\tRegulation\tReference\n" + body)
    b.write_text(body)
    (sa, na), (sb, nb) = read_trrust(a), read_trrust(b)
    assert sa.terms == sb.terms == ["MYC", "TP53"] and sa.genes[1] == ["CDKN1A", "MDM2"]
    assert na.edges == nb.edges == [("CDKN1A", "TP53"), ("MDM2", "TP53"), ("MYC", "TP53")]
    b.write_text(body + "MYC\tCCND1\tActivation\n")
    with pytest.raises(AtlasError, match=r"n\.tsv:4: a TRRUST line has 4 .* got 3"):
        read_trrust(b)


def _full_columns(rows):
    v = np.array([r.split() for r in rows], dtype=np.float64)
    names = FULL_HEADER.split()[2:]
    col = {n: v[:, i] for i, n in enumerate(names)}
    channels = {"neighborhood": (col["neighborhood"], col["neighborhood_transferred"]), "fusion": (col["fusion"],),
                "cooccurence": (col["cooccurence"],),
                "coexpression": (col["coexpression"], col["coexpression_transferred"]),
                "experimental": (col["experiments"], col["experiments_transferred"]),
                "database": (col["database"], col["database_transferred"]),
                "textmining": (col["textmining"], col["textmining_transferred"])}
    return channels, col["combined_score"].astype(int)


def test_string_formula_reproduces_stringss_combined_score_from_all_channels():
    channels, combined = _full_columns(FULL_ROWS)
    np.testing.assert_array_equal(string_score(channels), combined)
    detailed = np.array(DETAILED_ROW.split(), dtype=float)
    names = DETAILED_HEADER.split()[2:-1]
    assert string_score({n: detailed[i] for i, n in enumerate(names)}) == int(detailed[-1])
    # One channel alone: prior removed and put back, so the score is the channel's own.
    assert string_score({"experimental": np.array([700.0, 41.0, 0.0])}).tolist() == [700, 41, 41]


@pytest.mark.parametrize("fmt", ["full", "detailed"])
def test_string_reader_cuts_on_the_recombined_score_to_the_unit(tmp_path, fmt):
    if fmt == "full":
        text = FULL_HEADER + "\n" + "".join(f"G{i}A G{i}B {r}\n" for i, r in enumerate(FULL_ROWS))
        channels, combined = _full_columns(FULL_ROWS)
        exp_db = string_score({k: channels[k] for k in ("experimental", "database")})
    else:
        text = DETAILED_HEADER + "\nG0A G0B " + DETAILED_ROW + "\n"
        combined = np.array([260])
        exp_db = string_score({"experimental": np.array([176.0]), "database": np.array([0.0])})
    links = tmp_path / "links.txt.gz"
    links.write_bytes(gzip.compress(text.encode()))
    for i, score in enumerate(combined):
        at = read_string(links, min_score=int(score), channels=STRING_CHANNELS).edges
        above = {e for e in read_string(links, min_score=0, channels=STRING_CHANNELS).edges}
        assert (f"G{i}A", f"G{i}B") in at
        assert sorted(at) == sorted(e for e in above if combined[int(e[0][1:-1])] >= score)
        assert read_string(links, min_score=int(score), channels=COMBINED).edges == at
    # The default channels, experiments + databases, keep fewer links than the combined score.
    cut = int(np.median(exp_db))
    default = read_string(links, min_score=cut)
    assert default.meta["channels"] == ["experimental", "database"]
    assert sorted(default.edges) == sorted((f"G{i}A", f"G{i}B") for i in np.flatnonzero(exp_db >= cut))


def test_string_without_channel_columns_is_refused_unless_combined_is_asked_for(tmp_path):
    links, info = tmp_path / "links.txt", tmp_path / "info.txt"
    links.write_text("protein1 protein2 combined_score\n9606.ENSP1 9606.ENSP2 900\n9606.ENSP1 9606.ENSP3 400\n")
    info.write_text("#string_protein_id\tpreferred_name\tprotein_size\tannotation\n"
                    "9606.ENSP1\tTP53\t393\tx\n9606.ENSP2\tMDM2\t491\tx\n9606.ENSP3\tEP300\t2414\tx\n")
    with pytest.raises(AtlasError, match=r"links\.txt:1: no 'experimental' channel column.*--string-channels combined"):
        read_string(links, info)
    assert read_string(links, info, 700, COMBINED).edges == [("MDM2", "TP53")]
    assert len(read_string(links, info, 0, COMBINED).edges) == 2
    with pytest.raises(AtlasError, match=r"links\.txt:2: .*protein id.*--string-info"):
        read_string(links, channels=COMBINED)
    sym = tmp_path / "sym.txt"
    sym.write_text("TP53 MDM2 999\nTP53 EP300 800\n")
    with pytest.raises(AtlasError, match=r"sym\.txt: no channel columns.*--string-channels combined"):
        read_string(sym)
    assert read_string(sym, channels=COMBINED).edges == [("EP300", "TP53"), ("MDM2", "TP53")]


@pytest.mark.parametrize("text,message", [
    ("TP53 MDM2\nTP53 EP300\n", r"sym\.txt:1: no combined_score column \(first line: TP53 MDM2\)"),
    ("TP53 1\n", r"sym\.txt:1: STRING line has no score"),
    ("TP53 MDM2 999\nTP53 EP300\n", r"sym\.txt:2: STRING score column 2 has a missing value"),
    ("TP53 MDM2 999\nTP53 EP300 high\n", r"sym\.txt:2: STRING score column 2 has 'high'"),
    ("TP53 MDM2 999\n7157 EP300 900\n", r"sym\.txt:2: '7157' looks like an Entrez"),
    ("TP53 MDM2 999\nTP53 EP300 900 1\n", r"sym\.txt:2: expected 3 columns, got 4"),
])
def test_bad_string_lines_name_file_and_line(tmp_path, text, message):
    sym = tmp_path / "sym.txt"
    sym.write_text(text)
    with pytest.raises(AtlasError, match=message):
        read_string(sym, channels=COMBINED)


def test_string_channel_names():
    assert string_channels("database, experimental") == ("experimental", "database")
    assert string_channels("combined") == COMBINED
    with pytest.raises(AtlasError, match="'experiments'.*comma-separated subset"):
        string_channels("experiments")


def test_bundled_databases_carry_source_version_and_licence():
    for name in ("GO_BP", "KEGG", "Reactome", "Hallmark", "Canonical"):
        gs = bundled(name)
        assert len(gs.terms) > 40
        assert {"source", "version", "licence", "sha256"} <= set(gs.meta)
    assert all(t.startswith("REACTOME_") for t in bundled("Reactome").terms)
    assert not any(t.startswith("REACTOME_") for t in bundled("Canonical").terms)
