local lib = require("notes_lib")

return function(args)
  local notes = lib.load_all(lib.folder())
  if #notes == 0 then return "There are no notes yet." end
  if not vulcan.models.has("llm") then
    return "No language model is registered with this runtime; cannot summarize."
  end
  local parts = {}
  for i, note in ipairs(notes) do parts[i] = "- " .. note.title .. ": " .. note.text end
  local reply = vulcan.models.llm(
    "Summarize these notes in two sentences.", table.concat(parts, "\n"))
  return reply.text, "truncate", "markdown"
end
