//! NVLM-D's `chatml` conversation (its own `conversation.py`, MPT separator style), which differs from Qwen2's chat
//! template: no newline after `<|im_end|>`, and the default system message "Answer the questions.".
//!
//! ```text
//! <|im_start|>system\n{system}<|im_end|><|im_start|>user\n{q1}<|im_end|><|im_start|>assistant\n{a1}<|im_end|>
//! <|im_start|>user\n{q}<|im_end|><|im_start|>assistant\n            (one line; wrapped here for reading)
//! ```

/// NVLM-D's default system message.
pub const DEFAULT_SYSTEM_MESSAGE: &str = "Answer the questions.";
const SYSTEM_START: &str = "<|im_start|>system\n";
const USER_START: &str = "<|im_start|>user\n";
const ASSISTANT_START: &str = "<|im_start|>assistant\n";
const TURN_END: &str = "<|im_end|>";

/// The system turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SystemPrompt {
    /// "Answer the questions." (the model's default).
    #[default]
    Default,
    /// A custom system message.
    Custom(String),
    /// No system turn at all. This is what upstream's `chat_without_sys_prompt` means to build; its string slicing
    /// leaves a fragment of another system prompt instead, which is not reproduced here.
    None,
}

/// The prompt for `question` after `history` (finished `(question, answer)` turns), ending with the open assistant
/// turn. Image placeholders (`<image>`) are left in place for `nvlm_tiling::prompt::expand_images`.
pub fn build_prompt(system: &SystemPrompt, history: &[(String, String)], question: &str) -> String {
    let mut prompt = String::new();
    match system {
        SystemPrompt::Default => push_turn(&mut prompt, SYSTEM_START, DEFAULT_SYSTEM_MESSAGE),
        SystemPrompt::Custom(message) => push_turn(&mut prompt, SYSTEM_START, message),
        SystemPrompt::None => {}
    }
    for (old_question, old_answer) in history {
        push_turn(&mut prompt, USER_START, old_question);
        push_turn(&mut prompt, ASSISTANT_START, old_answer);
    }
    push_turn(&mut prompt, USER_START, question);
    prompt.push_str(ASSISTANT_START);
    prompt
}

fn push_turn(prompt: &mut String, role: &str, message: &str) {
    prompt.push_str(role);
    prompt.push_str(message);
    prompt.push_str(TURN_END);
}
