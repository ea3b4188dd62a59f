local lib = require("notes_lib")

return function(args)
  local folder = lib.folder()
  vulcan.fs.mkdir(folder, true)
  local name = lib.slug(args.title) .. ".json"
  local path = vulcan.path.join(folder, name)
  local note = {title = args.title, text = args.text, tags = args.tags or {}, saved_at = os.time()}
  vulcan.fs.write(path, vulcan.json.encode(note))
  vulcan.runtime.log("info", "saved", path)
  return "Saved note '" .. args.title .. "' as " .. name, nil, nil, {file = name, title = args.title}
end
