"""Task data through `datasets`: local files of every kind, `save_to_disk` folders, local copies of hub
datasets in the hub's own layout (--data-dir), the offline error, and the catalogue's hub schemas.

The rows are real rows of each dataset, in its exact hub schema (field names and types).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from llmgen.errors import LlmgenError
from llmgen.tasks import catalogue, get_task, task_from_yaml
from llmgen.tasks.hub import load_hub, load_split

# openai/gsm8k (main): question, answer ending "#### N"
GSM8K_TRAIN = [{"question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
                "How many clips did Natalia sell altogether in April and May?",
                "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips "
                "altogether in April and May.\n#### 72"},
               {"question": "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. "
                "How much did she earn?",
                "answer": "Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.\nWorking 50 minutes, she earned 0.2 x 50 = "
                "$<<0.2*50=10>>10.\n#### 10"}]
GSM8K_TEST = [{"question": "Janet’s ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes "
               "muffins for her friends every day with four. She sells the remainder at the farmers' market daily for "
               "$2 per fresh duck egg. How much in dollars does she make every day at the farmers' market?",
               "answer": "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\nShe makes 9 * 2 = $<<9*2=18>>18 "
               "every day at the farmer’s market.\n#### 18"}]
# HuggingFaceH4/MATH-500: problem, solution, answer, subject, level (int), unique_id
MATH500 = [{"problem": "Convert the point $(0,3)$ in rectangular coordinates to polar coordinates.  Enter your answer "
            "in the form $(r,\\theta),$ where $r > 0$ and $0 \\le \\theta < 2 \\pi.$",
            "solution": "We have that $r = \\sqrt{0^2 + 3^2} = 3.$  Also, if we draw the line connecting the origin and "
            "$(0,3),$ this line makes an angle of $\\frac{\\pi}{2}$ with the positive $x$-axis.\n\n[asy]\nunitsize(0.8 cm);"
            "\n\ndraw((-0.5,0)--(3.5,0));\ndraw((0,-0.5)--(0,3.5));\ndraw(arc((0,0),3,0,90),red,Arrow(6));\n\ndot((0,3), "
            "red);\nlabel(\"$(0,3)$\", (0,3), W);\ndot((3,0), red);\n[/asy]\n\nTherefore, the polar coordinates are "
            "$\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}.$",
            "answer": "\\left( 3, \\frac{\\pi}{2} \\right)", "subject": "Precalculus", "level": 2,
            "unique_id": "test/precalculus/807.json"}]
# EleutherAI/hendrycks_math (config algebra): problem, level ("Level N"), type, solution with \boxed{}
MATH_ALGEBRA = [{"problem": "How many vertical asymptotes does the graph of $y=\\frac{2}{x^2+x-6}$ have?",
                 "level": "Level 3", "type": "Algebra",
                 "solution": "The denominator of the rational function factors into $y=\\frac{2}{(x-2)(x+3)}$. Since the "
                 "denominator is zero when $x=2$ or $x=-3$, and the numerator isn't zero for those values, the graph "
                 "has vertical asymptotes at $x=2$ and $x=-3$. Hence, there are $\\boxed{2}$ vertical asymptotes."}]
# tatsu-lab/alpaca: instruction, input, output, text
ALPACA = [{"instruction": "Give three tips for staying healthy.", "input": "",
           "output": "1.Eat a balanced diet and make sure to include plenty of fruits and vegetables. \n2. Exercise "
           "regularly to keep your body active and strong. \n3. Get enough sleep and maintain a consistent sleep schedule.",
           "text": "Below is an instruction that describes a task. Write a response that appropriately completes the "
           "request.\n\n### Instruction:\nGive three tips for staying healthy.\n\n### Response:\n1.Eat a balanced diet "
           "and make sure to include plenty of fruits and vegetables. \n2. Exercise regularly to keep your body active "
           "and strong. \n3. Get enough sleep and maintain a consistent sleep schedule."}]
# Open-Orca/OpenOrca: id, system_prompt, question, response
OPENORCA = [{"id": "niv.242684", "system_prompt": "",
             "question": "You will be given a definition of a task first, then some input of the task.\nThis task is "
             "about using the specified sentence and converting the sentence to Resource Description Framework (RDF) "
             "triplets of the form (subject, predicate object). The RDF triplets generated must be such that the "
             "triplets accurately capture the structure and semantics of the input sentence. The input is a sentence "
             "and the output is a list of triplets of the form [subject, predicate, object] that capture the "
             "relationships present in the sentence. When a sentence has more than 1 RDF triplet possible, the output "
             "must contain all of them.\n\nAFC Ajax (amateurs)'s ground is Sportpark De Toekomst where Ajax Youth "
             "Academy also play.\nOutput:",
             "response": '[\n  ["AFC Ajax (amateurs)", "has ground", "Sportpark De Toekomst"],\n  ["Ajax Youth Academy", '
             '"plays at", "Sportpark De Toekomst"]\n]'}]


def write_parquet(path, rows):
    import datasets

    path.parent.mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_list(rows).to_parquet(str(path))


# --- local files of every kind ----------------------------------------------------------------

@pytest.mark.parametrize("ext", ["json", "jsonl", "csv", "parquet", "arrow"])
def test_local_file_kinds(tmp_path, ext):
    import datasets

    rows = [{"question": "What is 2 + 2?", "answer": "4"}, {"question": "What is 3 + 5?", "answer": "8"}]
    path = tmp_path / f"d.{ext}"
    ds = datasets.Dataset.from_list(rows)
    if ext == "json":
        path.write_text(json.dumps(rows))
    elif ext == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif ext == "csv":
        ds.to_csv(str(path), index=False)
    elif ext == "parquet":
        ds.to_parquet(str(path))
    else:  # an Arrow IPC stream file, as datasets writes its cache files
        import pyarrow as pa

        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, ds.data.table.schema) as writer:
            writer.write_table(ds.data.table)
    assert load_split(path.name, tmp_path) == [{**r, "answer": r["answer"] if ext != "csv" else int(r["answer"])}
                                               for r in rows]
    (tmp_path / "t.yaml").write_text(f"data: d.{ext}\ntarget: answer\nextract: first_number\n")
    task = task_from_yaml(tmp_path / "t.yaml")
    assert task.build_prompt(task.docs[0]) == "Question: What is 2 + 2?\nAnswer:" and task.is_correct(" 4.", task.docs[0])


def test_save_to_disk_folders(tmp_path):
    import datasets

    dsd = datasets.DatasetDict({"train": datasets.Dataset.from_list(GSM8K_TRAIN),
                                "test": datasets.Dataset.from_list(GSM8K_TEST)})
    dsd.save_to_disk(str(tmp_path / "gsm8k_saved"))
    datasets.Dataset.from_list(GSM8K_TEST).save_to_disk(str(tmp_path / "one_split"))
    (tmp_path / "t.yaml").write_text("dataset: {path: gsm8k_saved, split: test}\nfewshot: {split: train}\n"
                                     "num_fewshot: 2\ntarget: answer\nextract: last_number\n"
                                     "target_extract: [{function: regex, regex_pattern: '#### (\\-?[0-9]+)'}]\n")
    task = task_from_yaml(tmp_path / "t.yaml")
    assert task.docs == GSM8K_TEST and task.fewshot_docs == GSM8K_TRAIN and task.gold_answer(task.docs[0]) == "18"
    assert load_split("one_split", tmp_path) == GSM8K_TEST
    with pytest.raises(LlmgenError, match="has no split 'validation' \\(splits: train, test\\)"):
        load_split({"path": "gsm8k_saved", "split": "validation"}, tmp_path)
    (tmp_path / "plain").mkdir()
    with pytest.raises(LlmgenError, match="not a `save_to_disk` dataset"):
        load_split("plain", tmp_path)


# --- hub datasets: local copies in the hub layout, the offline error ---------------------------

def test_offline_uncached_hub_dataset_is_one_error_line(tmp_path):
    (tmp_path / "t.yaml").write_text("dataset: {path: llmgen-test/no-such-dataset, split: test}\ntarget: answer\n")
    env = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
           "LLMGEN_CACHE": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin"}
    code = ("import sys\nfrom llmgen.errors import LlmgenError\nfrom llmgen.tasks import get_task\n"
            f"try:\n    get_task({str(tmp_path / 't.yaml')!r})\nexcept LlmgenError as e:\n    print(e); sys.exit(2)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stdout.strip() == ("hub dataset 'llmgen-test/no-such-dataset' split 'test' is not in the HF cache and offline "
                                "mode is on (HF_HUB_OFFLINE=1): download it where the hub is reachable, or give "
                                "--data-dir with a local copy")


def _hub_copies(root):
    """Local copies of the catalogue's datasets, each in its hub repository's file layout."""
    write_parquet(root / "openai/gsm8k/main/train-00000-of-00001.parquet", GSM8K_TRAIN * 3)
    write_parquet(root / "openai/gsm8k/main/test-00000-of-00001.parquet", GSM8K_TEST)
    (root / "HuggingFaceH4/MATH-500").mkdir(parents=True)
    (root / "HuggingFaceH4/MATH-500/test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in MATH500))
    write_parquet(root / "EleutherAI/hendrycks_math/algebra/test-00000-of-00001.parquet", MATH_ALGEBRA)
    (root / "locuslab/TOFU").mkdir(parents=True)
    from pathlib import Path

    tofu = Path("/work/shared/data/tofu/forget10.json")
    rows = [json.loads(line) for line in tofu.read_text().splitlines()[:3]] if tofu.exists() else [
        {"question": "What is the full name of the author born in Taipei, Taiwan on 05/11/1991 who writes in the genre "
         "of leadership?", "answer": "The author's full name is Hsiao Yun-Hwa."}]
    (root / "locuslab/TOFU/forget10.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    write_parquet(root / "tatsu-lab/alpaca/data/train-00000-of-00001-a09b74b3ef9c3b56.parquet", ALPACA)
    write_parquet(root / "Open-Orca/OpenOrca/1M-GPT4-Augmented.parquet", OPENORCA)
    return rows


def test_catalogue_from_local_copies(tmp_path, monkeypatch):
    tofu_rows = _hub_copies(tmp_path)
    monkeypatch.setenv("LLMGEN_DATA_DIR", str(tmp_path))
    names = set(catalogue())
    assert {"gsm8k", "math500", "hendrycks_math_algebra", "tofu_qa_forget01", "tofu_qa_world_facts_perturbed",
            "alpaca", "openorca"} <= names

    gsm = get_task("gsm8k")
    assert gsm.docs == GSM8K_TEST and len(gsm.fewshot_docs) == 6 and gsm.num_fewshot == 5
    assert gsm.gold_answer(gsm.docs[0]) == "18"
    assert gsm.is_correct(" She sells 16 - 3 - 4 = 9 eggs and makes 9 * 2 = $18.", gsm.docs[0])
    assert not gsm.is_correct(" 16 eggs", gsm.docs[0])
    prompt = gsm.build_prompt(gsm.docs[0])
    assert prompt.count("Question:") == 6 and prompt.endswith("farmers' market?\nAnswer:") and "#### 72" in prompt

    m500 = get_task("math500")
    assert m500.is_correct("So the answer is $\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}$.", m500.docs[0])
    assert not m500.is_correct("$\\boxed{(3, \\pi)}$", m500.docs[0])
    alg = get_task("hendrycks_math_algebra")
    assert alg.gold_answer(alg.docs[0]) == "2" and alg.is_correct("There are $\\boxed{2}$.", alg.docs[0])

    tofu = get_task("tofu_qa_forget10")
    assert tofu.docs == tofu_rows and tofu.is_correct(f"Well, {tofu_rows[0]['answer']}", tofu_rows[0])
    assert get_task("alpaca").build_prompt(ALPACA[0]) == ALPACA[0]["text"]
    assert get_task("openorca").docs == OPENORCA
    with pytest.raises(LlmgenError, match="has no 'test' split for config 'geometry'"):
        (tmp_path / "EleutherAI/hendrycks_math/geometry").mkdir()
        get_task("hendrycks_math_geometry")


def test_hub_loader_prefers_local_copy(tmp_path, monkeypatch):
    _hub_copies(tmp_path)
    monkeypatch.setenv("LLMGEN_DATA_DIR", str(tmp_path))
    assert load_hub("openai/gsm8k", "main", "train") == GSM8K_TRAIN * 3


def test_tasks_command_filter(capsys, monkeypatch):
    """`llmgen tasks --filter TEXT`: matching built-in and catalogue tasks (names never cut), nothing else."""
    from llmgen.cli.main import main

    monkeypatch.setenv("COLUMNS", "80")
    main(["tasks", "--filter", "math"])
    out = capsys.readouterr().out
    names = {line.split()[0] for line in out.splitlines() if line.strip()}  # the name column, never cut
    for name in ("math500", "hendrycks_math_intermediate_algebra", "math_generated_d2"):
        assert name in names
    assert not names & {"arithmetic", "gsm8k", "tofu_qa"}
