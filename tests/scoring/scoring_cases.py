"""Tables of model outputs and the grades they should get, for tests/test_scoring.py.

The outputs imitate what models fine-tuned on MetaMathQA (prompt "Question: ... Answer:") and
instruction-tuned models write on GSM8K: chain of thought ending in "The answer is: N",
GSM8K's "#### N", LaTeX boxes, currency, units, hallucinated next questions, wrong answers.
"""

from __future__ import annotations

from typing import NamedTuple


class GradeCase(NamedTuple):
    name: str
    output: str
    reference: str
    strict: bool  # expected correct_strict
    flexible: bool  # expected correct_flexible


class ExtractCase(NamedTuple):
    name: str
    text: str
    mode: str
    expected: str | None


NATALIA_REF = (
    "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
    "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72"
)
WENG_REF = "Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.\nWorking 50 minutes, she earned 0.2 x 50 = $<<0.2*50=10>>10.\n#### 10"
BETTY_REF = "In the beginning, Betty has only 100 / 2 = $<<100/2=50>>50.\n#### 5"
JANET_REF = "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\nShe makes 9 * 2 = $<<9*2=18>>18 every day.\n#### 18"
HOUSE_REF = "So he made a profit of 200,000-130,000=$<<200000-130000=70000>>70,000\n#### 70000"
BIG_REF = "The total is 1,080.\n#### 1,080"
NEG_REF = "He is 7 dollars short.\n#### -7"
METAMATH_REF = "Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips altogether.\nThe answer is: 72"

NATALIA_COT = (
    "Natalia sold 48/2 = 24 clips in May.\n"
    "Natalia sold 48+24 = 72 clips altogether in April and May.\n"
)
NEXT_QUESTION = (
    "\n\nQuestion: Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of "
    "babysitting. How much did she earn? Think step by step.\nAnswer: Weng earns 12/60 = 0.2 per "
    "minute.\nThe answer is: 10"
)

GRADE_CASES: list[GradeCase] = [
    # --- MetaMathQA style, right
    GradeCase("metamath_plain", NATALIA_COT + "The answer is: 72", NATALIA_REF, True, True),
    GradeCase("metamath_trailing_newline", NATALIA_COT + "The answer is: 72\n", NATALIA_REF, True, True),
    GradeCase("metamath_against_metamath_reference", NATALIA_COT + "The answer is: 72", METAMATH_REF, True, True),
    GradeCase("metamath_against_bare_reference", NATALIA_COT + "The answer is: 72", "72", True, True),
    GradeCase("hash_then_phrase", NATALIA_COT + "#### 72\nThe answer is: 72", NATALIA_REF, True, True),
    GradeCase("gsm8k_hash_only", NATALIA_COT + "#### 72", NATALIA_REF, True, True),
    GradeCase("hash_without_space", NATALIA_COT + "####72", NATALIA_REF, True, True),
    GradeCase("no_colon", NATALIA_COT + "The answer is 72.", NATALIA_REF, True, True),
    GradeCase("lowercase_so", NATALIA_COT + "So the answer is 72.", NATALIA_REF, True, True),
    GradeCase("therefore_final", NATALIA_COT + "Therefore, the final answer is 72.", NATALIA_REF, True, True),
    GradeCase("final_answer_capital", NATALIA_COT + "The final answer is 72", NATALIA_REF, True, True),
    GradeCase("with_units", NATALIA_COT + "The answer is: 72 clips", NATALIA_REF, True, True),
    GradeCase("with_units_sentence", NATALIA_COT + "The answer is 72 clips altogether.", NATALIA_REF, True, True),
    GradeCase("bold_markdown", NATALIA_COT + "**The answer is: 72**", NATALIA_REF, True, True),
    GradeCase("bold_answer_only", NATALIA_COT + "The answer is: **72**", NATALIA_REF, True, True),
    GradeCase("answer_on_next_line", NATALIA_COT + "The answer is:\n72", NATALIA_REF, True, True),
    GradeCase("math_delimiters", NATALIA_COT + "The answer is $72$.", NATALIA_REF, True, True),
    GradeCase("paren_delimiters", NATALIA_COT + "The answer is \\(72\\).", NATALIA_REF, True, True),
    GradeCase("expression_then_value", "The answer is 48 + 24 = 72.", NATALIA_REF, True, True),
    GradeCase("x_equals", "Solving, x = 72.\nThe answer is: x = 72", NATALIA_REF, True, True),
    GradeCase("repeated_answer_loop", NATALIA_COT + "The answer is: 72\nThe answer is: 72\nThe answer is: 72",
              NATALIA_REF, True, True),
    GradeCase("repeat_loop_cut_by_token_limit", NATALIA_COT + "The answer is: 72\nThe answer is: 72\nThe answer is: 7",
              NATALIA_REF, True, True),
    GradeCase("times_then_value", "She makes 9 x 2 = 18 dollars.\nThe answer is: 9 x 2 = 18", JANET_REF, True, True),
    GradeCase("about_filler", "The answer is about 18 dollars.", JANET_REF, True, True),
    GradeCase("a_total_of_filler", "The answer is a total of 72 clips.", NATALIA_REF, True, True),
    GradeCase("eos_token_then_junk", NATALIA_COT + "The answer is: 72<|end_of_text|>The answer is: 5", NATALIA_REF, True, True),
    GradeCase("eot_token", NATALIA_COT + "The answer is: 72<|eot_id|>", NATALIA_REF, True, True),
    GradeCase("sentencepiece_eos", NATALIA_COT + "The answer is: 72</s>\nQuestion: x", NATALIA_REF, True, True),
    # --- hallucinated continuations
    GradeCase("next_question_after_answer", NATALIA_COT + "The answer is: 72" + NEXT_QUESTION, NATALIA_REF, True, True),
    GradeCase("next_question_wrong_first", NATALIA_COT.replace("72", "70") + "The answer is: 70" + NEXT_QUESTION,
              NATALIA_REF, False, False),
    GradeCase("next_question_would_match_second", "She earns 0.2 per minute.\nThe answer is: 12" + NEXT_QUESTION,
              WENG_REF, False, False),
    GradeCase("next_q_colon", NATALIA_COT + "The answer is: 72\nQ: Tom has 5 apples. The answer is 5", NATALIA_REF, True, True),
    GradeCase("next_problem_header", NATALIA_COT + "The answer is: 72\n\nProblem: A robe takes 2 bolts.\nThe answer is: 3",
              NATALIA_REF, True, True),
    GradeCase("next_instruction_header", NATALIA_COT + "The answer is: 72\n### Instruction:\nSolve 2+2.\nThe answer is: 4",
              NATALIA_REF, True, True),
    GradeCase("inline_next_question", NATALIA_COT + "The answer is: 72 Question: Tom buys 3 pens. The answer is: 3",
              NATALIA_REF, True, True),
    GradeCase("paragraph_without_header", NATALIA_COT + "The answer is: 72\n\nJohn has 3 apples and buys 2 more.\n"
              "John has 3+2 = 5 apples.\nThe answer is: 5", NATALIA_REF, True, True),
    GradeCase("numbered_next_question", NATALIA_COT + "The answer is: 72\nQuestion 2: Weng earns $12.\nThe answer is: 10",
              NATALIA_REF, True, True),
    GradeCase("user_turn", NATALIA_COT + "The answer is 72.\nUser: thanks! what is 2+2?\nThe answer is 4", NATALIA_REF, True, True),
    GradeCase("no_marker_then_next_question", NATALIA_COT + "\nQuestion: Weng earns $12 an hour. The answer is: 10",
              NATALIA_REF, False, True),
    GradeCase("blank_lines_inside_reasoning", "Natalia sold 24 clips in May.\n\nIn total she sold 48+24 = 72.\n\n"
              "The answer is: 72", NATALIA_REF, True, True),
    # --- last marker wins
    GradeCase("self_correction_same_paragraph", "48+24 = 62. The answer is 62. Wait, 48+24 = 72, so the answer is 72.",
              NATALIA_REF, True, True),
    GradeCase("boxed_after_phrase", NATALIA_COT + "The final answer is $\\boxed{72}$. I hope it is correct.", NATALIA_REF, True, True),
    GradeCase("phrase_after_boxed", "So she sold $\\boxed{72}$ clips.\nThe answer is: 72", NATALIA_REF, True, True),
    GradeCase("last_marker_wrong", "#### 72\nThe answer is: 70", NATALIA_REF, False, False),
    GradeCase("answer_is_correct_afterthought", NATALIA_COT + "The answer is 72.\nI checked it: the answer is correct.",
              NATALIA_REF, True, True),
    GradeCase("given_that_the_answer_is_not_a_marker", "We are given that the answer is 24, so 48/2 = 24 clips in May.\n"
              "In total 48 + 24 = 72.", NATALIA_REF, False, True),
    GradeCase("markdown_heading_is_no_marker", "#### Step 1\n48/2 = 24\n#### Step 2\n48 + 24 = 72", NATALIA_REF, False, True),
    # --- LaTeX boxes
    GradeCase("boxed_plain", "In total: $48 + 24 = \\boxed{72}$", NATALIA_REF, True, True),
    GradeCase("boxed_text_units", "$\\boxed{72 \\text{ clips}}$", NATALIA_REF, True, True),
    GradeCase("boxed_nested_braces", "The answer is $\\boxed{\\frac{144}{2}}$.", NATALIA_REF, True, True),
    GradeCase("boxed_with_thousands", "\\[\\boxed{1,080}\\]", BIG_REF, True, True),
    GradeCase("boxed_latex_thousands", "\\[\\boxed{1{,}080}\\]", BIG_REF, True, True),
    GradeCase("boxed_dollar", "She makes $\\boxed{\\$18}$ per day.", JANET_REF, True, True),
    GradeCase("boxed_wrong", "She makes $\\boxed{16}$ per day.", JANET_REF, False, False),
    GradeCase("boxed_cut_off", "So the total is \\boxed{7", NATALIA_REF, False, False),
    GradeCase("fbox", "Total: \\fbox{72}", NATALIA_REF, True, True),
    # --- currency
    GradeCase("dollar_sign", "She makes 9 * 2 = $18 every day.\nThe answer is: $18", JANET_REF, True, True),
    GradeCase("dollar_cents", "The answer is $18.00.", JANET_REF, True, True),
    GradeCase("dollars_word", "The answer is 18 dollars.", JANET_REF, True, True),
    GradeCase("escaped_dollar", "The answer is \\$18.", JANET_REF, True, True),
    GradeCase("usd_prefix", "The answer is USD 18", JANET_REF, True, True),
    GradeCase("euro", "The answer is \u20ac18.", JANET_REF, True, True),
    GradeCase("dollar_wrong_cents", "The answer is $18.50.", JANET_REF, False, False),
    GradeCase("decimal_reference", "She earned 0.2 x 50 = $10.\nThe answer is: 10.0", WENG_REF, True, True),
    GradeCase("cents_decimal", "The answer is: 29.00", "29", True, True),
    GradeCase("money_thousands", "The profit is $70,000.\nThe answer is: $70,000", HOUSE_REF, True, True),
    GradeCase("money_thousands_no_comma", "The answer is: 70000", HOUSE_REF, True, True),
    GradeCase("money_wrong_thousands", "The answer is: $7,000", HOUSE_REF, False, False),
    GradeCase("money_million_word", "The answer is 0.07 million dollars", HOUSE_REF, True, True),
    # --- thousands separators
    GradeCase("thousands_comma", "The answer is: 1,080", BIG_REF, True, True),
    GradeCase("thousands_no_comma", "The answer is: 1080", BIG_REF, True, True),
    GradeCase("thousands_with_units", "The answer is 1,080 pages.", BIG_REF, True, True),
    GradeCase("thousands_wrong", "The answer is 1,008", BIG_REF, False, False),
    GradeCase("list_is_not_thousands", "The answer is 1, 80", BIG_REF, False, False),
    # --- units, words and punctuation
    GradeCase("hours_period", "It takes 5 hours.\nThe answer is 5 hours.", "#### 5", True, True),
    GradeCase("exclamation", "The answer is 5!", "#### 5", True, True),
    GradeCase("degree", "The answer is 90^\\circ", "#### 90", True, True),
    GradeCase("per_unit_slash", "The answer is $18/day", JANET_REF, True, True),
    GradeCase("hyphenated_unit", "The answer is 40-year-old", "#### 40", True, True),
    GradeCase("number_word", "The answer is five.", "#### 5", True, True),
    GradeCase("number_word_compound", "The answer is twenty-five", "#### 25", True, True),
    GradeCase("number_word_wrong", "The answer is four.", "#### 5", False, False),
    GradeCase("one_of_is_not_a_number", "The answer is one of the boxes.", "#### 1", False, False),
    GradeCase("trailing_explanation", "The answer is 5, because 10/2 = 5.", "#### 5", True, True),
    GradeCase("glued_letters_are_a_term", "The answer is 5x", "#### 5", False, False),
    # --- negative numbers and decimals
    GradeCase("negative", "He is 7 dollars short.\nThe answer is: -7", NEG_REF, True, True),
    GradeCase("unicode_minus", "The answer is \u22127.", NEG_REF, True, True),
    GradeCase("negative_dollar", "The answer is -$7.", NEG_REF, True, True),
    GradeCase("positive_for_negative", "The answer is 7", NEG_REF, False, False),
    GradeCase("decimal", "The answer is: 2.5", "#### 2.5", True, True),
    GradeCase("decimal_leading_dot", "The answer is .5", "0.5", True, True),
    GradeCase("decimal_vs_fraction_reference", "The answer is 0.75", "3/4", True, True),
    GradeCase("rounded_decimal_is_wrong", "The answer is 0.33", "\\frac{1}{3}", False, False),
    GradeCase("long_decimal_within_tolerance", "The answer is 33.3333333", "100/3", True, True),
    GradeCase("decimal_version_number_like", "The answer is 3.50", "3.5", True, True),
    # --- fractions and LaTeX
    GradeCase("fraction_slash", "The answer is 3/4", "0.75", True, True),
    GradeCase("fraction_latex", "The answer is $\\frac{3}{4}$", "0.75", True, True),
    GradeCase("fraction_dfrac", "The answer is $\\dfrac{3}{4}$.", "3/4", True, True),
    GradeCase("fraction_short_latex", "The answer is $\\frac34$", "0.75", True, True),
    GradeCase("fraction_negative_latex", "The answer is $-\\frac{3}{4}$", "-0.75", True, True),
    GradeCase("fraction_unreduced", "The answer is 6/8", "3/4", True, True),
    GradeCase("fraction_wrong", "The answer is 4/3", "3/4", False, False),
    GradeCase("mixed_number", "The answer is 2 1/2 cups.", "#### 2.5", True, True),
    GradeCase("latex_mixed_number", "The answer is $2\\frac{1}{2}$", "5/2", True, True),
    GradeCase("fraction_equals_value", "The answer is 48/2 = 24.", "#### 24", True, True),
    # --- percentages: "25%" is the number 25, never 0.25
    GradeCase("percent_sign", "The answer is 25%", "#### 25", True, True),
    GradeCase("percent_latex", "The answer is $25\\%$.", "#### 25", True, True),
    GradeCase("percent_word", "The answer is 25 percent.", "#### 25", True, True),
    GradeCase("percent_as_ratio_is_wrong", "The answer is 0.25", "#### 25", False, False),
    GradeCase("percent_for_ratio_reference_is_wrong", "The answer is 25%", "0.25", False, False),
    GradeCase("percent_reference", "The answer is 40", "40%", True, True),
    # --- wrong answers with a marker
    GradeCase("wrong_plain", NATALIA_COT.replace("72", "70") + "The answer is: 70", NATALIA_REF, False, False),
    GradeCase("wrong_off_by_one", "The answer is: 71", NATALIA_REF, False, False),
    GradeCase("wrong_but_right_number_earlier", NATALIA_COT + "The answer is: 24", NATALIA_REF, False, False),
    GradeCase("wrong_scale", "The answer is: 720", NATALIA_REF, False, False),
    GradeCase("wrong_prose_answer", "The answer is: the total number of clips", NATALIA_REF, False, False),
    GradeCase("empty_marker_falls_back_in_flexible", NATALIA_COT + "The answer is:", NATALIA_REF, False, True),
    # --- no marker: strict wrong, flexible takes the last number
    GradeCase("no_marker_last_number_right", NATALIA_COT, NATALIA_REF, False, True),
    GradeCase("no_marker_last_number_wrong", "Natalia sold 72 clips in total, 24 of them in May.", NATALIA_REF, False, False),
    GradeCase("no_marker_money", "She earns 0.2 per minute, so she earned $10.", WENG_REF, False, True),
    GradeCase("no_marker_thousands", "The total comes to 1,080 pages", BIG_REF, False, True),
    GradeCase("no_marker_negative", "So the balance is -7 dollars.", NEG_REF, False, True),
    GradeCase("no_marker_calculator_annotations", "She makes 9 * 2 = $<<9*2=18>>18 every day.", JANET_REF, False, True),
    GradeCase("no_marker_truncated", "Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+", NATALIA_REF, False, False),
    GradeCase("no_marker_subtraction", "She has 100 - 95 = 5 dollars left", BETTY_REF, False, True),
    GradeCase("empty_output", "", NATALIA_REF, False, False),
    GradeCase("whitespace_output", "   \n  ", NATALIA_REF, False, False),
    # --- MATH-style references (symbolic check)
    GradeCase("math_surd_equal_form", "The answer is: \\frac{1}{\\sqrt{2}}", "\\frac{\\sqrt{2}}{2}", True, True),
    GradeCase("math_surd_same", "The answer is: \\frac{\\sqrt{2}}{2}", "\\frac{\\sqrt{2}}{2}", True, True),
    GradeCase("math_surd_decimal", "The answer is: 0.7071068", "\\frac{\\sqrt{2}}{2}", True, True),
    GradeCase("math_surd_wrong", "The answer is: \\frac{\\sqrt{3}}{2}", "\\frac{\\sqrt{2}}{2}", False, False),
    GradeCase("math_interval", "The answer is $[2, 5)$.", "[2,5)", True, True),
    GradeCase("math_interval_wrong_bracket", "The answer is $(2, 5)$.", "[2,5)", False, False),
    GradeCase("math_tuple", "The final answer is $\\boxed{(1, 2)}$.", "(1,2)", True, True),
    GradeCase("math_polynomial", "The answer is: x^2+2x+1", "(x+1)^2", True, True),
    GradeCase("math_power_vs_number", "The answer is 2^{3}", "#### 8", True, True),
    GradeCase("math_boxed_solution_reference", "The answer is: 2\\sqrt{2}",
              "We have $\\sqrt{8} = 2\\sqrt{2}$, so the answer is $\\boxed{2\\sqrt{2}}$.", True, True),
    GradeCase("math_pi", "The answer is $4\\pi$", "4\\pi", True, True),
    GradeCase("math_pi_wrong", "The answer is $2\\pi$", "4\\pi", False, False),
    # --- a capitalised marker after a word without a period (grader 2): chain-of-thought lines
    # often end without one, and the reference's parser accepts the marker there
    GradeCase("capital_after_word", "It takes 5+20+5=30 minutes The answer is 30.", "#### 30", True, True),
    GradeCase("capital_after_word_no_period", "It takes 5+20+5=30 minutes The answer is 30", "#### 30", True, True),
    GradeCase("capital_after_word_colon", "It takes 5+20+5=30 minutes The answer is: 30", "#### 30", True, True),
    GradeCase("capital_after_word_commas", "So he made a profit of 200,000-130,000=$70,000 The answer is 70,000.",
              HOUSE_REF, True, True),
    GradeCase("capital_after_word_currency", "She makes 9*2=$18 every day The answer is $18.", JANET_REF, True, True),
    GradeCase("capital_after_word_currency_cents", "She makes 9*2=$18 every day The answer is $18.00",
              JANET_REF, True, True),
    GradeCase("capital_after_word_decimal", "Weng earns 12/60=0.2 per minute The answer is 0.2.", "#### 0.2", True, True),
    GradeCase("capital_after_word_decimal_no_period", "She earned 0.2 x 50 = 10.0 dollars The answer is 10.0",
              WENG_REF, True, True),
    GradeCase("capital_after_word_wrong", "It takes 5+20+5=31 minutes The answer is 31.", "#### 30", False, False),
    GradeCase("capital_final_answer_after_word", "In total 48+24=72 clips The final answer is 72", NATALIA_REF, True, True),
    GradeCase("capital_after_word_then_afterthought", "48+24=72 clips The answer is 72. I checked: The answer is correct",
              NATALIA_REF, True, True),
    GradeCase("lowercase_inside_sentence_still_no_marker", "It takes 5+20+5=30 minutes the answer is 30.",
              "#### 30", False, True),
    GradeCase("lowercase_given_that_guard_after_word", "We know that the answer is 2, so 5+20+5=30 minutes", "#### 2",
              False, False),
    GradeCase("lowercase_so_after_word", "It takes 2/2=1 bolt of white fiber so the answer is 3.", "#### 3", True, True),
    GradeCase("lowercase_therefore_after_word", "He runs 9*60=540 meters therefore the answer is 540", "#### 540",
              True, True),
    GradeCase("lowercase_and_after_word_needs_a_comma", "x is 5 and the answer is 2 more than x", "#### 7",
              False, False),
    GradeCase("answer_is_therefore", "Since 3>2, Adrian purchases choice B. The answer is therefore 3.", "#### 3",
              True, True),
    GradeCase("answer_is_thus_comma", "The answer is thus 1,080 dollars.", BIG_REF, True, True),
]

EXTRACT_CASES: list[ExtractCase] = [
    ExtractCase("metamath", NATALIA_COT + "The answer is: 72", "strict", "72"),
    ExtractCase("gsm8k_reference", NATALIA_REF, "strict", "72"),
    ExtractCase("gsm8k_thousands", BIG_REF, "strict", "1080"),
    ExtractCase("gsm8k_negative", NEG_REF, "strict", "-7"),
    ExtractCase("no_marker_strict", NATALIA_COT, "strict", None),
    ExtractCase("no_marker_flexible", NATALIA_COT, "flexible", "72"),
    ExtractCase("flexible_prefers_marker", "The answer is: 72\nand 3 more", "flexible", "72"),
    ExtractCase("currency_cents", "The answer is $29.00.", "strict", "29.00"),
    ExtractCase("currency_thousands", "The answer is $1,080.", "strict", "1080"),
    ExtractCase("percent", "The answer is 25%.", "strict", "25"),
    ExtractCase("units", "The answer is 18 dollars", "strict", "18"),
    ExtractCase("hours", "The answer is 5 hours.", "strict", "5"),
    ExtractCase("trailing_period", "The answer is 72.", "strict", "72"),
    ExtractCase("capital_after_word", "so 5+20+5=30 minutes The answer is 30.", "strict", "30"),
    ExtractCase("capital_after_word_currency", "so 2*$9=$18 The answer is $1,018.50", "strict", "1018.50"),
    ExtractCase("lowercase_after_word", "so 5+20+5=30 minutes the answer is 30.", "strict", None),
    ExtractCase("lowercase_after_word_flexible", "so 5+20+5=30 minutes the answer is 30.", "flexible", "30"),
    ExtractCase("decimal_trailing_period", "The answer is 3.5.", "strict", "3.5"),
    ExtractCase("leading_dot", "The answer is .5", "strict", "0.5"),
    ExtractCase("negative", "The answer is -3", "strict", "-3"),
    ExtractCase("unicode_minus", "The answer is \u22123", "strict", "-3"),
    ExtractCase("fraction", "The answer is 3/4", "strict", "3/4"),
    ExtractCase("latex_fraction", "The answer is \\frac{3}{4}", "strict", "3/4"),
    ExtractCase("latex_dfrac", "The answer is \\dfrac{3}{4}", "strict", "3/4"),
    ExtractCase("latex_tfrac_negative", "The answer is -\\tfrac{3}{4}", "strict", "-3/4"),
    ExtractCase("latex_dollar", "The answer is \\$5", "strict", "5"),
    ExtractCase("boxed", "so $\\boxed{72}$", "strict", "72"),
    ExtractCase("boxed_nested", "$\\boxed{\\frac{\\sqrt{2}}{2}}$", "strict", "\\frac{\\sqrt{2}}{2}"),
    ExtractCase("non_numeric_kept", "The answer is: \\frac{\\sqrt{2}}{2}", "strict", "\\frac{\\sqrt{2}}{2}"),
    ExtractCase("non_numeric_trailing_period", "The answer is $(1, 2)$.", "strict", "(1, 2)"),
    ExtractCase("interval", "The answer is: [2, 5)", "strict", "[2, 5)"),
    ExtractCase("expression_then_value", "The answer is 48/2 = 24.", "strict", "24"),
    ExtractCase("x_equals", "The answer is: x = 5", "strict", "5"),
    ExtractCase("approx", "The answer is 100/3 \\approx 33.33", "strict", "33.33"),
    ExtractCase("approximately", "The answer is approximately 33.3 minutes", "strict", "33.3"),
    ExtractCase("repeat_cut_at_limit", "The answer is: 125\nThe answer is: 125\nThe answer is: 12", "strict", "125"),
    ExtractCase("real_last_answer_not_a_prefix", "The answer is: 125\nThe answer is: 126", "strict", "126"),
    ExtractCase("scale_word", "The answer is 2.5 million", "strict", "2500000"),
    ExtractCase("hash_then_phrase_last_wins", "#### 15\nThe answer is: 16", "strict", "16"),
    ExtractCase("phrase_then_boxed_last_wins", "The final answer is $\\boxed{7}$.", "strict", "7"),
    ExtractCase("cut_next_question", "The answer is: 72\n\nQuestion: x? The answer is: 5", "strict", "72"),
    ExtractCase("cut_next_question_flexible", "She has 72.\nQuestion: Tom has 5 pens.", "flexible", "72"),
    ExtractCase("cut_paragraph_after_answer", "The answer is: 72\n\nJohn has 5.\nThe answer is: 5", "strict", "72"),
    ExtractCase("calculator_annotation_removed", "The answer is <<8=8>>8.", "strict", "8"),
    ExtractCase("flexible_subtraction_is_not_negative", "10-5", "flexible", "5"),
    ExtractCase("flexible_thousands", "total 1,234,567 items", "flexible", "1234567"),
    ExtractCase("flexible_fraction", "each gets 3/4", "flexible", "3/4"),
    ExtractCase("flexible_nothing", "I do not know.", "flexible", None),
    ExtractCase("heading_not_marker_strict", "#### Step 1\nHe has 5", "strict", None),
    ExtractCase("empty", "", "strict", None),
    ExtractCase("answer_word_kept", "The answer is: \\text{Monday}", "strict", "\\text{Monday}"),
    ExtractCase("degrees", "The answer is 30^{\\circ}", "strict", "30"),
    ExtractCase("number_word", "The answer is seven", "strict", "7"),
    ExtractCase("list_not_a_number", "The answer is 3, 4", "strict", "3, 4"),
    ExtractCase("mixed_number", "The answer is 1 1/2", "strict", "3/2"),
]
